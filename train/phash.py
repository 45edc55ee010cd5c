"""Perceptual image hashes in numpy + OpenCV (no imagehash dependency).

``phash``: 64-bit DCT hash (32x32 greyscale, the 8x8 lowest frequencies against their
median).  Re-encoding, resizing and small contrast changes move it by a few bits; different
scans differ by ~32.  ``hamming`` counts differing bits; ``near_pairs`` finds every pair
within a distance, in blocks so that memory stays small.
"""
import numpy as np

BITS = 64  # the hash's length: the largest Hamming distance two hashes can have
_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def phash(rgb):
    """64-bit perceptual hash of an RGB (or greyscale) uint8 image, as a Python int."""
    import cv2
    grey = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def hamming(a, b):
    return bin(int(a) ^ int(b)).count("1")


def near_pairs(hashes, max_distance=4, block=1024):
    """(i, j, distance) for every i < j whose hashes differ by at most ``max_distance`` bits."""
    h = np.asarray([int(x) for x in hashes], dtype=np.uint64)
    pairs = []
    for start in range(0, len(h), block):
        part = h[start:start + block]
        xor = part[:, None] ^ h[None, :]
        dist = _BITS[xor.view(np.uint8)].reshape(xor.shape + (8,)).sum(axis=2)
        rows, cols = np.nonzero(dist <= max_distance)
        for r, c in zip(rows, cols):
            i = start + int(r)
            if i < int(c):
                pairs.append((i, int(c), int(dist[r, c])))
    return pairs


class UnionFind(object):
    def __init__(self, n):
        self.parent = list(range(n))

    def find(self, i):
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i, j):
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)

    def groups(self):
        """Lists of member indices, each group of two or more, ordered by first member."""
        out = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return [g for _, g in sorted(out.items()) if len(g) > 1]
