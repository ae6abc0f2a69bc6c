"""RFC 9162 §2.1 Merkle tree (SHA-256): hashing, proof verification and proof generation.

Hashes: leaf = SHA-256(0x00 || data), interior node = SHA-256(0x01 || left || right),
empty tree = SHA-256(""). The tree of n leaves splits at the largest power of two below n.

Storage model for a log server. Only *perfect* subtrees are ever stored: the node at
address (level, index) is the hash of leaves [index * 2**level, (index + 1) * 2**level),
so (0, i) is leaf i's hash. Such a node never changes once its last leaf is appended. The
non-perfect nodes on the right edge of a tree of size n are recomputed from at most
log2(n) perfect ones, so a proof or root for any size up to the current one needs O(log n)
stored nodes and never a scan of the leaves:

    addresses = nodes_needed_for_inclusion(index, size)   # one batched query
    found = {address: stored_hash, ...}
    proof = inclusion_proof(index, size, lambda level, i: found[(level, i)])

Appending goes through `CompactRange`, the perfect subtrees covering [0, size): it takes a
batch of leaf hashes and returns every new perfect node to store, in O(batch + log n).
`MemoryTree` puts the two together in memory for tests and clients.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency) and agrees
with transparency-dev/merkle on its test vectors, including its refusal of consistency
proofs from size 0 (the empty tree is consistent with every tree: a caller that must
accept "old size 0", as a tlog-witness does, checks that case itself).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .errors import InvalidConsistencyProof, InvalidInclusionProof, InvalidProofRequest

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Address = tuple[int, int]
"""(level, index) of a perfect subtree: leaves [index * 2**level, (index + 1) * 2**level)."""

GetNode = Callable[[int, int], bytes]
"""Returns the stored hash of the perfect subtree at (level, index)."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


# --- verification (RFC 9162 §2.1.3.2, §2.1.4.2) ------------------------------------------


def _check_hashes(
    proof: Sequence[bytes], error: type[InvalidInclusionProof | InvalidConsistencyProof]
) -> None:
    for position, item in enumerate(proof):
        if len(item) != HASH_SIZE:
            raise error(f"proof element {position} is {len(item)} bytes, not a {HASH_SIZE}-byte hash")


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` implies for leaf hash `leaf` at `index` in a tree of `size`.

    Raises InvalidInclusionProof if the proof cannot be one for that position (index out of
    range, wrong number of hashes, a hash of the wrong length); a caller still has to
    compare the result with a root it trusts, which is what `verify_inclusion` does.
    """
    if not 0 <= index < size:
        raise InvalidInclusionProof(f"leaf index {index} is not in a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise InvalidInclusionProof(f"the leaf hash is {len(leaf)} bytes, not {HASH_SIZE}")
    _check_hashes(proof, InvalidInclusionProof)
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise InvalidInclusionProof(
                f"the proof has more hashes than an inclusion proof for leaf {index} of {size}"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidInclusionProof(
            f"the proof has fewer hashes than an inclusion proof for leaf {index} of {size}"
        )
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise InvalidInclusionProof unless `proof` shows leaf hash `leaf` at `index` under `root`."""
    if root_from_inclusion_proof(leaf, index, size, proof) != root:
        raise InvalidInclusionProof(
            f"the inclusion proof for leaf {index} does not lead to the root of the tree of size {size}"
        )


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise InvalidConsistencyProof unless `proof` shows tree (size1, root1) is a prefix of (size2, root2).

    Equal sizes need an empty proof and equal roots. Size 0 is refused (see the module
    docstring).
    """
    if size1 < 0 or size2 < size1:
        raise InvalidConsistencyProof(f"no consistency proof goes from size {size1} to size {size2}")
    if size1 == 0:
        raise InvalidConsistencyProof("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise InvalidConsistencyProof("trees of equal size need an empty consistency proof")
        if root1 != root2:
            raise InvalidConsistencyProof(f"two different roots for the tree of size {size1}")
        return
    if not proof:
        raise InvalidConsistencyProof(f"an empty proof cannot show size {size1} grew into size {size2}")
    _check_hashes(proof, InvalidConsistencyProof)

    path = list(proof)
    if size1 & (size1 - 1) == 0:
        # The old tree is a perfect subtree of the new one: its root is the proof's seed.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidConsistencyProof(
                f"the proof has more hashes than a consistency proof from {size1} to {size2}"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidConsistencyProof(
            f"the proof has fewer hashes than a consistency proof from {size1} to {size2}"
        )
    if fr != root1:
        raise InvalidConsistencyProof(f"the consistency proof does not lead to the root of size {size1}")
    if sr != root2:
        raise InvalidConsistencyProof(f"the consistency proof does not lead to the root of size {size2}")


# --- generation from stored perfect subtrees ----------------------------------------------


# The largest power of two strictly smaller than n (n >= 2).
def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


# Perfect subtrees covering [lo, hi), left to right, largest first. For every node of an RFC
# 9162 tree, [lo, hi) is aligned so that these are its perfect subtrees in the tree's own shape,
# and folding them from the right gives its hash.
def _range_nodes(lo: int, hi: int) -> list[Address]:
    width = hi - lo
    if width > 0 and width & (width - 1) == 0 and lo & (width - 1) == 0:
        # Already a perfect subtree, as every left sibling on a path is: the common case.
        level = width.bit_length() - 1
        return [(level, lo >> level)]
    out: list[Address] = []
    while lo < hi:
        fits = (hi - lo).bit_length() - 1
        level = min(fits, (lo & -lo).bit_length() - 1) if lo else fits
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def _range_hash(lo: int, hi: int, get_node: GetNode) -> bytes:
    return _fold([get_node(level, index) for level, index in _range_nodes(lo, hi)])


# Leaf ranges of the hashes of PATH(index, D[size]), in proof order (RFC 9162 §2.1.3.1).
def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    if not 0 <= index < size:
        raise InvalidProofRequest(f"leaf index {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


# Leaf ranges of the hashes of PROOF(size1, D[size2]), in proof order (RFC 9162 §2.1.4.1).
def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    if not 0 <= size1 <= size2:
        raise InvalidProofRequest(f"no consistency proof goes from size {size1} to size {size2}")
    if size1 in (0, size2):
        return []
    siblings: list[tuple[int, int]] = []
    lo, hi, whole_old_tree = 0, size2, True
    while hi != size1:
        k = _split(hi - lo)
        if size1 <= lo + k:
            siblings.append((lo + k, hi))
            hi = lo + k
        else:
            siblings.append((lo, lo + k))
            lo += k
            whole_old_tree = False
    # SUBPROOF's base case: the node equal to the old tree is left out only when it is
    # the old tree's root, which the verifier already has.
    head = [] if whole_old_tree else [(lo, hi)]
    return head + siblings[::-1]


def _addresses(ranges: Iterable[tuple[int, int]]) -> list[Address]:
    return [address for lo, hi in ranges for address in _range_nodes(lo, hi)]


def nodes_needed_for_root(size: int) -> list[Address]:
    """Addresses `root(size, ...)` reads: the perfect subtrees covering [0, size)."""
    if size < 0:
        raise InvalidProofRequest(f"a tree cannot have size {size}")
    return _range_nodes(0, size)


def nodes_needed_for_inclusion(index: int, size: int) -> list[Address]:
    """Addresses `inclusion_proof(index, size, ...)` reads, to fetch in one query."""
    return _addresses(_inclusion_ranges(index, size))


def nodes_needed_for_consistency(size1: int, size2: int) -> list[Address]:
    """Addresses `consistency_proof(size1, size2, ...)` reads, to fetch in one query."""
    return _addresses(_consistency_ranges(size1, size2))


def root(size: int, get_node: GetNode) -> bytes:
    """Root hash of the tree of the first `size` leaves."""
    if size == 0:
        return EMPTY_ROOT
    return _fold([get_node(level, index) for level, index in nodes_needed_for_root(size)])


def inclusion_proof(index: int, size: int, get_node: GetNode) -> list[bytes]:
    """PATH(index, D[size]): the audit path of leaf `index` in the tree of the first `size` leaves."""
    return [_range_hash(lo, hi, get_node) for lo, hi in _inclusion_ranges(index, size)]


def consistency_proof(size1: int, size2: int, get_node: GetNode) -> list[bytes]:
    """PROOF(size1, D[size2]); empty when size1 is 0 or equals size2."""
    return [_range_hash(lo, hi, get_node) for lo, hi in _consistency_ranges(size1, size2)]


# --- appending ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactRange:
    """The right frontier of a tree: hashes of the perfect subtrees covering [0, size).

    `hashes` are left to right (largest subtree first), one per set bit of `size`. This is
    all an integrator needs to append and to compute the root; it is rebuilt from storage
    with `from_store`.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != self.size.bit_count():
            raise ValueError(f"a compact range of size {self.size} has {self.size.bit_count()} hashes")
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError(f"compact range hashes are {HASH_SIZE} bytes")

    @classmethod
    def from_store(cls, size: int, get_node: GetNode) -> CompactRange:
        """The frontier of the tree of `size` leaves, read from stored perfect subtrees."""
        return cls(size, tuple(get_node(level, index) for level, index in nodes_needed_for_root(size)))

    def root(self) -> bytes:
        return _fold(self.hashes) if self.hashes else EMPTY_ROOT

    def append_many(self, leaf_hashes: Iterable[bytes]) -> tuple[CompactRange, list[tuple[Address, bytes]]]:
        """Append leaf hashes; return the new range and every perfect subtree they complete.

        The list includes each new leaf at level 0 and every interior node finished by the
        batch, children before parents: exactly what a store must insert so that proofs
        for any size up to the new one can be served.
        """
        hashes = list(self.hashes)
        size = self.size
        new: list[tuple[Address, bytes]] = []
        for h in leaf_hashes:
            if len(h) != HASH_SIZE:
                raise ValueError(f"leaf hash {size} is {len(h)} bytes, not {HASH_SIZE}")
            new.append(((0, size), h))
            level, index = 0, size
            # An odd index is a right child: its left sibling is the last frontier hash.
            while index & 1:
                h = node_hash(hashes.pop(), h)
                level += 1
                index >>= 1
                new.append(((level, index), h))
            hashes.append(h)
            size += 1
        return CompactRange(size, tuple(hashes)), new


class MemoryTree:
    """An in-memory log: leaf data in, roots and proofs for any past size out.

    Stores the same perfect-subtree nodes a server would, through `CompactRange`.
    """

    def __init__(self) -> None:
        self.nodes: dict[Address, bytes] = {}
        self._range = CompactRange()

    @property
    def size(self) -> int:
        return self._range.size

    def get_node(self, level: int, index: int) -> bytes:
        return self.nodes[(level, index)]

    def append(self, data: bytes) -> int:
        """Append one leaf (its data, hashed here); return its index."""
        return self.append_leaf_hashes([leaf_hash(data)])

    def extend(self, leaves: Iterable[bytes]) -> int:
        """Append leaves (data); return the index of the first."""
        return self.append_leaf_hashes([leaf_hash(data) for data in leaves])

    def append_leaf_hashes(self, hashes: Iterable[bytes]) -> int:
        """Append already-hashed leaves; return the index of the first."""
        first = self.size
        self._range, new = self._range.append_many(hashes)
        self.nodes.update(new)
        return first

    def leaf_hash(self, index: int) -> bytes:
        return self.nodes[(0, index)]

    def root(self, size: int | None = None) -> bytes:
        return root(self._size(size), self.get_node)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self._size(size), self.get_node)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(size1, self._size(size2), self.get_node)

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if not 0 <= size <= self.size:
            raise InvalidProofRequest(f"the tree has {self.size} leaves, not {size}")
        return size
