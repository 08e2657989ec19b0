#!/usr/bin/env python3
"""The PyTorch baseline (torch_unet_baseline.py, copied beside this file by pack.sh) on another
U-Net of the same family: --dim and --mults replace Unet(16, (1, 2, 4, 8), 3), every other flag is
the baseline's. Unet(128, (1, 1, 2, 2), 3) is `{"width": 128, "multipliers": [1, 1, 2, 2]}` in
ddpm-lab (linear attention at every level, full attention in the middle, GroupNorm groups 4).

  python3 torch_shapes.py --dim 128 --mults 1,1,2,2 --size 64 --batch 16 --device cuda --json out.json
"""
import sys

import torch_unet_baseline as baseline

args, dim, mults = [], 16, (1, 2, 4, 8)
it = iter(sys.argv[1:])
for a in it:
    if a == '--dim':
        dim = int(next(it))
    elif a == '--mults':
        mults = tuple(int(m) for m in next(it).split(','))
    else:
        args.append(a)

course = baseline.Unet
baseline.Unet = lambda _dim, _mults, channels=3, **kw: course(dim, mults, channels, **kw)
sys.argv = [sys.argv[0]] + args
baseline.main()
