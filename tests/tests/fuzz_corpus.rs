//! The fuzz targets on every test run: each target's seed corpus (`tests/fuzz/corpus/TARGET`),
//! then mutations of it (bit flips, byte changes, insertions, deletions, truncations, splices of
//! two seeds), through the same functions AFL++ drives (`tests/fuzz/src/lib.rs`, included
//! here). An input that panics fails the test and is written to
//! `target/tmp/fuzz-findings/TARGET-N.bin`, where `tests/fuzz/run.sh` or a debugger can replay
//! it. Coverage-guided runs are `tests/fuzz/run.sh` (AFL++, `INKAN_FUZZ_SECS` in the test
//! command).
//!
//! `INKAN_FUZZ_MUTATIONS` sets the mutations per target (default 200k, a few seconds each); `INKAN_FUZZ_SEED`
//! repeats a run (the seed is printed).

#![allow(clippy::unwrap_used)]

#[allow(dead_code, clippy::expect_used)]
#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One input may take this long (debug build) before it counts as a hang.
const SLOW: Duration = Duration::from_secs(5);

/// A small deterministic generator (xorshift64*), so a seed repeats a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// The seed inputs of `target`, sorted by name.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

/// `seed` changed by one to eight mutations; `other` is a second seed to splice with.
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: [u8; 8] = [0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0xff, 0x30];
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(8) {
        let len = data.len();
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len);
                data[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                data[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let at = rng.below(len);
                data[at] = rng.next() as u8;
            }
            3 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                data.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(32)).min(len);
                data.drain(from..to);
            }
            5 => data.truncate(rng.below(len + 1)),
            6 if len > 0 => {
                // A stretch repeated: long lengths, nested structures.
                let from = rng.below(len);
                let to = (from + 1 + rng.below(64)).min(len);
                let chunk = data[from..to].to_vec();
                for _ in 0..1 + rng.below(4) {
                    data.splice(to..to, chunk.iter().copied());
                }
            }
            _ => {
                let keep = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(keep);
                data.extend_from_slice(&other[from..]);
            }
        }
    }
    data
}

/// Runs `target` over its corpus and `INKAN_FUZZ_MUTATIONS` mutations of it; fails on the
/// first input that panics or takes longer than [`SLOW`], after writing it to a file.
fn fuzz(target: &str) {
    let (_, body) = targets::TARGETS.iter().find(|(name, _)| *name == target).unwrap();
    let mutations: usize = std::env::var("INKAN_FUZZ_MUTATIONS").ok().and_then(|m| m.parse().ok()).unwrap_or(200_000);
    let seed = std::env::var("INKAN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    if let Err(finding) = run(target, *body, &corpus(target), mutations, seed) {
        panic!("{finding}");
    }
}

/// `body` over `seeds` and `mutations` mutations of them: the first input that panics or is
/// slow, written to a file and described, or nothing.
fn run(target: &str, body: fn(&[u8]), seeds: &[Vec<u8>], mutations: usize, seed: u64) -> Result<(), String> {
    eprintln!("fuzz {target}: {} seeds, {mutations} mutations, INKAN_FUZZ_SEED={seed}", seeds.len());
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let inputs = seeds.iter().cloned().chain((0..mutations).map(|_| {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        mutate(&mut rng, a, b)
    }));
    for (n, input) in inputs.enumerate() {
        let at = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| body(&input)));
        let took = at.elapsed();
        slowest = slowest.max(took);
        if outcome.is_err() || took > SLOW {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join(format!("{target}-{n}.bin"));
            std::fs::write(&file, &input).unwrap();
            let what = if outcome.is_err() { "panicked".to_owned() } else { format!("took {took:?}") };
            return Err(format!(
                "fuzz {target}: input {n} {what} (INKAN_FUZZ_SEED={seed}); written to {}",
                file.display()
            ));
        }
    }
    eprintln!(
        "fuzz {target}: {} inputs in {:?}, slowest {slowest:?}, no panic",
        seeds.len() + mutations,
        started.elapsed()
    );
    Ok(())
}

/// The loop finds what it is for: a body that panics on a byte no seed has is reported, with
/// the input written where the message says; a body that never panics passes.
#[test]
fn a_panicking_input_is_found_and_kept() {
    fn fragile(data: &[u8]) {
        assert!(!data.contains(&0xee), "a byte the seeds lack");
    }
    fn sturdy(_: &[u8]) {}
    let seeds = vec![b"0123456789".to_vec(), b"abcdef".to_vec()];
    let finding = run("self-test", fragile, &seeds, 20_000, 7).expect_err("0xee is found in 20k mutations");
    let file = finding.rsplit("written to ").next().unwrap();
    assert!(std::fs::read(file).unwrap().contains(&0xee), "{finding}");
    assert_eq!(run("self-test", sturdy, &seeds, 1000, 7), Ok(()));
}

#[test]
fn every_target_has_a_test_and_a_corpus() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["csr", "ocsp_request", "signer_frame", "admin_request", "pem_input", "est_body", "otp_input"],
        "a target added to tests/fuzz needs a test here"
    );
    for name in names {
        assert!(!corpus(name).is_empty());
    }
}

#[test]
fn fuzz_csr() {
    fuzz("csr");
}

#[test]
fn fuzz_ocsp_request() {
    fuzz("ocsp_request");
}

#[test]
fn fuzz_signer_frame() {
    fuzz("signer_frame");
}

#[test]
fn fuzz_admin_request() {
    fuzz("admin_request");
}

#[test]
fn fuzz_pem_input() {
    fuzz("pem_input");
}

#[test]
fn fuzz_est_body() {
    fuzz("est_body");
}

#[test]
fn fuzz_otp_input() {
    fuzz("otp_input");
}
