"""Weight-sharing networks that stand for many architectures at once.

One module per method: ProxylessNAS's mixed operations with binarized paths and DARTS's continuous
relaxation (gradient-based search that derives one architecture), and Once-for-All's elastic supernet
(train once, extract any subnet with its weights). Import from the submodules.
"""
