// The tests' and the compare scripts' one deterministic PRNG (mulberry32):
// a seed gives the same cases wherever it is used. Plain JavaScript, so the
// .mjs scripts run by node take it as the TypeScript tests do (prng.d.mts).

export function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (xs) => xs[Math.floor(next() * xs.length)],
    chance: (p) => next() < p,
    /** The generator's state: a name for what it is about to make. */
    state: () => a,
  };
}
