//! Which sample of each source a position takes: a permutation per pass that depends only on the
//! seed, the source name and the pass.

/// SplitMix64: a small, fully specified generator, so permutations are the same on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (Lemire's multiply-shift with rejection).
    fn below(&mut self, n: u64) -> u64 {
        loop {
            let m = (self.next() as u128) * (n as u128);
            if (m as u64) >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The order in which pass `pass` over a source of `n` samples takes them: a Fisher-Yates
/// shuffle seeded by (seed, source name, pass) only.
pub fn permutation(seed: u64, source: &str, pass: u64, n: u64) -> Vec<u32> {
    let key = format!("midmix-permutation\0{seed}\0{source}\0{pass}");
    let mut rng = SplitMix64(xxhash_rust::xxh3::xxh3_64(key.as_bytes()));
    let mut p: Vec<u32> = (0..n as u32).collect();
    for i in (1..p.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// Resolve each position to (source, sample index): pass p of source i takes permutation p.
/// Also returns how many samples each source gave.
pub(super) fn resolve_picks(
    seed: u64,
    names: &[&str],
    plan_sources: &[u8],
    avail: &[u64],
) -> (Vec<(u8, u32)>, Vec<u64>) {
    let k = names.len();
    let mut seen = vec![0u64; k];
    let mut picks: Vec<(u8, u32)> = Vec::with_capacity(plan_sources.len());
    let mut perms: Vec<Vec<u32>> = vec![Vec::new(); k];
    let mut perm_pass = vec![u64::MAX; k];
    for &s in plan_sources {
        let i = s as usize;
        let pass = seen[i] / avail[i];
        if perm_pass[i] != pass {
            perms[i] = permutation(seed, names[i], pass, avail[i]);
            perm_pass[i] = pass;
        }
        picks.push((s, perms[i][(seen[i] % avail[i]) as usize]));
        seen[i] += 1;
    }
    (picks, seen)
}
