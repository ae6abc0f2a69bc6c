"""RFC 9162 Merkle tree: external vectors, a naive reference, stored-node proofs, appends."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest

from msmt.core import errors
from msmt.core.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_needed_for_consistency,
    nodes_needed_for_inclusion,
    nodes_needed_for_root,
    root,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "external" / "merkle"
VECTOR_FILES = sorted(VECTORS.rglob("*.json"))

# The leaves and roots of RFC 6962's test tree, as transparency-dev/merkle's testonly package
# has them; the valid vectors are proofs in this tree.
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
RFC6962_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
MAX_SIZE = 70


# --- naive reference: RFC 9162 §2.1 as written, recursion over lists of leaf hashes ---------


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(hashes: list[bytes]) -> bytes:
    if not hashes:
        return hashlib.sha256(b"").digest()
    if len(hashes) == 1:
        return hashes[0]
    k = split(len(hashes))
    return hashlib.sha256(b"\x01" + ref_mth(hashes[:k]) + ref_mth(hashes[k:])).digest()


def ref_path(m: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) <= 1:
        return []
    k = split(len(hashes))
    if m < k:
        return [*ref_path(m, hashes[:k]), ref_mth(hashes[k:])]
    return [*ref_path(m - k, hashes[k:]), ref_mth(hashes[:k])]


def ref_subproof(m: int, hashes: list[bytes], whole: bool) -> list[bytes]:
    if m == len(hashes):
        return [] if whole else [ref_mth(hashes)]
    k = split(len(hashes))
    if m <= k:
        return [*ref_subproof(m, hashes[:k], whole), ref_mth(hashes[k:])]
    return [*ref_subproof(m - k, hashes[k:], False), ref_mth(hashes[:k])]


def ref_consistency(m: int, hashes: list[bytes]) -> list[bytes]:
    return ref_subproof(m, hashes, True)


def lookup(fetched: dict[tuple[int, int], bytes]) -> Any:
    """A get_node over the result of one batched query."""
    return lambda level, index: fetched[(level, index)]


def flip_bit(proof: list[bytes], position: int, bit: int) -> list[bytes]:
    tampered = list(proof)
    item = bytearray(tampered[position])
    item[bit // 8] ^= 1 << (bit % 8)
    tampered[position] = bytes(item)
    return tampered


@pytest.fixture(scope="module")
def leaves() -> list[bytes]:
    rng = random.Random(9162)
    return [rng.randbytes(rng.randrange(0, 40)) for _ in range(MAX_SIZE)]


@pytest.fixture(scope="module")
def tree(leaves: list[bytes]) -> MemoryTree:
    t = MemoryTree()
    for data in leaves:
        t.append(data)
    return t


@pytest.fixture(scope="module")
def hashes(leaves: list[bytes]) -> list[bytes]:
    return [leaf_hash(data) for data in leaves]


# --- external vectors (transparency-dev/merkle) ----------------------------------------------


def b64(items: list[str] | None) -> list[bytes]:
    return [base64.b64decode(item) for item in items or []]


def check_vector(vector: dict[str, Any]) -> None:
    if "leafIdx" in vector:
        verify_inclusion(
            base64.b64decode(vector["leafHash"]),
            vector["leafIdx"],
            vector["treeSize"],
            b64(vector["proof"]),
            base64.b64decode(vector["root"]),
        )
    else:
        verify_consistency(
            vector["size1"],
            vector["size2"],
            b64(vector["proof"]),
            base64.b64decode(vector["root1"]),
            base64.b64decode(vector["root2"]),
        )


def test_vector_copies_are_present() -> None:
    assert len(VECTOR_FILES) >= 100
    assert any(json.loads(p.read_text())["wantErr"] for p in VECTOR_FILES)


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.relative_to(VECTORS).as_posix())
def test_vector_gives_its_verdict(path: Path) -> None:
    vector = json.loads(path.read_text())
    expected = errors.InvalidInclusionProof if "leafIdx" in vector else errors.InvalidConsistencyProof
    if vector["wantErr"]:
        with pytest.raises(expected) as caught:
            check_vector(vector)
        assert caught.value.code in ("invalid-inclusion-proof", "invalid-consistency-proof")
        assert caught.value.detail
    else:
        check_vector(vector)


def test_rfc6962_tree_roots_and_stored_nodes() -> None:
    t = MemoryTree()
    assert t.root() == EMPTY_ROOT == bytes.fromhex(RFC6962_ROOTS[0])
    t.extend(RFC6962_LEAVES)
    assert [t.root(size).hex() for size in range(9)] == RFC6962_ROOTS
    assert t.get_node(3, 0).hex() == RFC6962_ROOTS[8]
    assert t.get_node(1, 1).hex() == "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
    assert t.get_node(2, 1).hex() == "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"


def test_valid_vectors_are_reproduced_by_the_generators() -> None:
    t = MemoryTree()
    t.extend(RFC6962_LEAVES)
    reproduced = 0
    for path in VECTOR_FILES:
        vector = json.loads(path.read_text())
        if vector["wantErr"]:
            continue
        if "leafIdx" in vector:
            index, size = vector["leafIdx"], vector["treeSize"]
            if size > len(RFC6962_LEAVES) or t.leaf_hash(index) != base64.b64decode(vector["leafHash"]):
                continue  # a lone leaf hash of another tree: checked by the verdict test only
            assert t.root(size) == base64.b64decode(vector["root"])
            assert t.inclusion_proof(index, size) == b64(vector["proof"])
        else:
            size1, size2 = vector["size1"], vector["size2"]
            if t.root(size1) != base64.b64decode(vector["root1"]):
                continue  # placeholder roots ("don't care")
            assert t.root(size2) == base64.b64decode(vector["root2"])
            assert t.consistency_proof(size1, size2) == b64(vector["proof"])
        reproduced += 1
    assert reproduced >= 6


# --- against the reference, every size and pair up to MAX_SIZE ---------------------------------


def test_roots_match_the_reference(tree: MemoryTree, hashes: list[bytes]) -> None:
    for size in range(MAX_SIZE + 1):
        assert tree.root(size) == ref_mth(hashes[:size])


def test_every_inclusion_proof(tree: MemoryTree, hashes: list[bytes]) -> None:
    for size in range(1, MAX_SIZE + 1):
        top = ref_mth(hashes[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == ref_path(index, hashes[:size])
            verify_inclusion(hashes[index], index, size, proof, top)
            assert root_from_inclusion_proof(hashes[index], index, size, proof) == top


def test_every_consistency_proof(tree: MemoryTree, hashes: list[bytes]) -> None:
    for size2 in range(1, MAX_SIZE + 1):
        root2 = ref_mth(hashes[:size2])
        for size1 in range(1, size2 + 1):
            proof = tree.consistency_proof(size1, size2)
            assert proof == ref_consistency(size1, hashes[:size2])
            verify_consistency(size1, size2, proof, ref_mth(hashes[:size1]), root2)


def test_nodes_needed_are_exactly_what_the_generators_read(tree: MemoryTree) -> None:
    def recording(read: list[tuple[int, int]]) -> Any:
        def get(level: int, index: int) -> bytes:
            read.append((level, index))
            return tree.get_node(level, index)

        return get

    for size in range(1, MAX_SIZE + 1):
        read: list[tuple[int, int]] = []
        root(size, recording(read))
        assert read == nodes_needed_for_root(size)
        for index in range(size):
            needed = nodes_needed_for_inclusion(index, size)
            assert all((i + 1) << level <= size for level, i in needed)  # only perfect subtrees
            fetched = {address: tree.nodes[address] for address in needed}  # one batched query
            assert inclusion_proof(index, size, lookup(fetched)) == tree.inclusion_proof(index, size)
            read = []
            inclusion_proof(index, size, recording(read))
            assert sorted(read) == sorted(needed)
        for size1 in range(size + 1):
            needed = nodes_needed_for_consistency(size1, size)
            assert all((i + 1) << level <= size for level, i in needed)
            fetched = {address: tree.nodes[address] for address in needed}
            assert consistency_proof(size1, size, lookup(fetched)) == tree.consistency_proof(size1, size)


def test_a_proof_at_a_million_leaves_needs_few_nodes() -> None:
    for index in (0, 1, 499_999, 999_998, 999_999):
        assert len(nodes_needed_for_inclusion(index, 10**6)) <= 2 * 20
    assert len(nodes_needed_for_consistency(123_457, 10**6)) <= 3 * 20
    assert len(nodes_needed_for_root(2**40 - 1)) == 40


# --- appending ---------------------------------------------------------------------------------


def test_batched_appends_equal_one_by_one(tree: MemoryTree, hashes: list[bytes]) -> None:
    rng = random.Random(6962)
    for _ in range(20):
        batched = MemoryTree()
        position = 0
        while position < MAX_SIZE:
            step = rng.randrange(0, 12)
            first = batched.append_leaf_hashes(hashes[position : position + step])
            assert first == position
            position = min(MAX_SIZE, position + step)
            assert batched.root() == tree.root(position)
        assert batched.nodes == tree.nodes


def test_stored_nodes_are_every_perfect_subtree(tree: MemoryTree) -> None:
    expected = {
        (level, index)
        for level in range(8)
        for index in range(MAX_SIZE >> level)
        if (index + 1) << level <= MAX_SIZE
    }
    assert set(tree.nodes) == expected


def test_append_many_reports_only_new_nodes_children_first(hashes: list[bytes]) -> None:
    frontier = CompactRange()
    seen: dict[tuple[int, int], bytes] = {}
    for start, stop in ((0, 5), (5, 6), (6, 16), (16, 16), (16, 70)):
        frontier, new = frontier.append_many(hashes[start:stop])
        for (level, index), value in new:
            assert (level, index) not in seen
            if level:
                assert value == node_hash(seen[(level - 1, 2 * index)], seen[(level - 1, 2 * index + 1)])
            seen[(level, index)] = value
        assert frontier.size == stop
        assert len(frontier.hashes) == bin(stop).count("1")
        assert frontier.root() == ref_mth(hashes[:stop])
        assert CompactRange.from_store(stop, lambda level, i: seen[(level, i)]) == frontier


def test_compact_range_rejects_inconsistent_state() -> None:
    with pytest.raises(ValueError):
        CompactRange(3, (b"\x00" * 32,))
    with pytest.raises(ValueError):
        CompactRange(1, (b"\x00" * 31,))
    with pytest.raises(ValueError):
        CompactRange().append_many([b"short"])
    assert CompactRange().root() == EMPTY_ROOT


# --- tampering and bad requests ----------------------------------------------------------------


def test_tampered_inclusion_proofs_are_rejected(tree: MemoryTree, hashes: list[bytes]) -> None:
    rng = random.Random(1)
    for size in range(2, MAX_SIZE + 1):
        top = tree.root(size)
        for index in rng.sample(range(size), min(size, 4)):
            proof = tree.inclusion_proof(index, size)
            leaf = hashes[index]
            for position in range(len(proof)):
                with pytest.raises(errors.InvalidInclusionProof):
                    verify_inclusion(leaf, index, size, flip_bit(proof, position, rng.randrange(256)), top)
            bad_proofs = [proof[:-1], [*proof, proof[0]], [proof[0], *proof], [p + b"\x00" for p in proof]]
            for bad in bad_proofs:
                with pytest.raises(errors.InvalidInclusionProof):
                    verify_inclusion(leaf, index, size, bad, top)
            for other in {index ^ 1, (index + 1) % size, size}:
                if other != index:
                    with pytest.raises(errors.InvalidInclusionProof):
                        verify_inclusion(leaf, other, size, proof, top)
            with pytest.raises(errors.InvalidInclusionProof):
                verify_inclusion(flip_bit([leaf], 0, 0)[0], index, size, proof, top)
            if size < MAX_SIZE:  # the proof of another size, with that size's root
                with pytest.raises(errors.InvalidInclusionProof):
                    verify_inclusion(leaf, index, size + 1, proof, tree.root(size + 1))


def test_tampered_consistency_proofs_are_rejected(tree: MemoryTree) -> None:
    rng = random.Random(2)
    for size2 in range(2, MAX_SIZE + 1):
        for size1 in rng.sample(range(1, size2), min(size2 - 1, 4)):
            proof = tree.consistency_proof(size1, size2)
            root1, root2 = tree.root(size1), tree.root(size2)
            for position in range(len(proof)):
                with pytest.raises(errors.InvalidConsistencyProof):
                    verify_consistency(
                        size1, size2, flip_bit(proof, position, rng.randrange(256)), root1, root2
                    )
            for bad in (proof[:-1], [*proof, proof[-1]], [root1, *proof], []):
                with pytest.raises(errors.InvalidConsistencyProof):
                    verify_consistency(size1, size2, bad, root1, root2)
            with pytest.raises(errors.InvalidConsistencyProof):
                verify_consistency(size1, size2, proof, root2, root1)
            for other in {size1 - 1, size1 + 1}:
                if 1 <= other < size2:
                    with pytest.raises(errors.InvalidConsistencyProof):
                        verify_consistency(other, size2, proof, tree.root(other), root2)


def test_consistency_edge_cases(tree: MemoryTree) -> None:
    r = tree.root(5)
    verify_consistency(5, 5, [], r, r)
    with pytest.raises(errors.InvalidConsistencyProof, match="equal size"):
        verify_consistency(5, 5, [r], r, r)
    with pytest.raises(errors.InvalidConsistencyProof, match="empty tree"):
        verify_consistency(0, 5, [], EMPTY_ROOT, r)
    with pytest.raises(errors.InvalidConsistencyProof):
        verify_consistency(6, 5, [], r, r)
    assert tree.consistency_proof(0, 5) == []
    assert tree.consistency_proof(5, 5) == []


@pytest.mark.parametrize(
    ("call", "args"),
    [
        (nodes_needed_for_inclusion, (5, 5)),
        (nodes_needed_for_inclusion, (-1, 5)),
        (nodes_needed_for_inclusion, (0, 0)),
        (nodes_needed_for_consistency, (6, 5)),
        (nodes_needed_for_consistency, (-1, 5)),
        (nodes_needed_for_root, (-1,)),
    ],
)
def test_impossible_requests_are_coded_errors(call: Any, args: tuple[int, ...]) -> None:
    with pytest.raises(errors.InvalidProofRequest) as caught:
        call(*args)
    assert caught.value.code == "invalid-proof-request"
    assert isinstance(caught.value, errors.LogError)
    assert errors.LogError.code == "log-error"


def test_memory_tree_refuses_sizes_it_does_not_have(tree: MemoryTree) -> None:
    with pytest.raises(errors.InvalidProofRequest):
        tree.root(MAX_SIZE + 1)
    with pytest.raises(errors.InvalidProofRequest):
        tree.inclusion_proof(0, MAX_SIZE + 1)
    with pytest.raises(errors.InvalidProofRequest):
        tree.consistency_proof(1, MAX_SIZE + 1)


def test_hash_functions() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"").hex() == RFC6962_ROOTS[1]
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")).hex() == RFC6962_ROOTS[2]
