import { createHash } from 'node:crypto';

// A Merkle tree hashed the way Certificate Transparency hashes its log (RFC 9162 §2.1): leaves
// and nodes are domain-separated (0x00 / 0x01), so no leaf can pose as a node, and the tree over
// n leaves splits at the largest power of two below n. Pure: shared by the checkpoint writer,
// the database verifier and the offline bundle verifier.

const sha256 = (...parts: Buffer[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);

export const merkleLeafHash = (data: Buffer | string): Buffer => sha256(LEAF, Buffer.isBuffer(data) ? data : Buffer.from(data, 'utf8'));
const nodeHash = (left: Buffer, right: Buffer) => sha256(NODE, left, right);

/** MTH(D[n]) over leaf hashes (already hashed with merkleLeafHash); the empty tree is sha256(""). */
export function merkleRoot(leaves: Buffer[]): Buffer {
  if (leaves.length === 0) return sha256();
  // Bottom-up, level by level: the same tree as the recursive definition (an odd node is
  // carried up unchanged), without recursion depth or slices.
  let level = leaves;
  while (level.length > 1) {
    const next: Buffer[] = [];
    for (let i = 0; i + 1 < level.length; i += 2) next.push(nodeHash(level[i]!, level[i + 1]!));
    if (level.length % 2 === 1) next.push(level[level.length - 1]!);
    level = next;
  }
  return level[0]!;
}

/**
 * PATH(m, D[n]): the sibling hashes from leaf m up to the root, nearest first. Built level by
 * level like merkleRoot (a node without a sibling is carried up and adds nothing to the path),
 * which is the same tree as RFC 9162's split at the largest power of two: O(n) hashes.
 */
export function merkleInclusionPath(index: number, leaves: Buffer[]): Buffer[] {
  if (index < 0 || index >= leaves.length) throw new RangeError(`leaf ${index} is outside a tree of ${leaves.length}`);
  const path: Buffer[] = [];
  let level = leaves;
  let i = index;
  while (level.length > 1) {
    const sibling = i ^ 1;
    if (sibling < level.length) path.push(level[sibling]!);
    const next: Buffer[] = [];
    for (let k = 0; k + 1 < level.length; k += 2) next.push(nodeHash(level[k]!, level[k + 1]!));
    if (level.length % 2 === 1) next.push(level[level.length - 1]!);
    level = next;
    i >>= 1;
  }
  return path;
}

/**
 * The root that leaf `index` of a tree of `treeSize` leaves and this audit path imply (RFC 9162
 * §2.1.3.2), or undefined when the path has the wrong length for that position.
 */
export function merkleRootFromPath(index: number, treeSize: number, leafHash: Buffer, path: Buffer[]): Buffer | undefined {
  if (index < 0 || index >= treeSize) return undefined;
  let fn = index;
  let sn = treeSize - 1;
  let r = leafHash;
  for (const p of path) {
    if (sn === 0) return undefined;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return sn === 0 ? r : undefined;
}
