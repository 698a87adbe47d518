//! The fuzz targets' poor relation, on stable Rust and in every `cargo test`: a few thousand
//! deterministic mutations (bit flips, YAML-ish bytes, cuts, splices, repeated and dropped
//! lines) of the shipped scenarios, the input corpus and the iSCSI seed PDUs go through the
//! scenario loader and the login PDU parser. Neither may panic, and each input must be
//! answered within a bound. The real fuzzing (libFuzzer, coverage-guided) is `cargo fuzz`: see
//! README.md, Tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netboot_harness::scenario;
use netboot_harness::support::iscsi_pdu;

/// Far above what one input takes (milliseconds; a regex at the size limit about 0.3 s in a
/// debug build), far below a hang.
const PER_INPUT: Duration = Duration::from_secs(5);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn files_in(dir: &Path, ext: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// Bytes that mean something to YAML, to the scenario format or to a PDU header.
const INTERESTING: &[u8] = b":-{}[],&*!|>#\"'\n\t \x00\xff0123456789.=/%@`";

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                b.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
            }
            3 => b.truncate(rng.below(len + 1)),
            4 => {
                // Splice: this input's start with another's end.
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            5 if len > 0 => {
                // Repeat a range: duplicate keys, nodes, steps.
                let start = rng.below(len);
                let end = (start + 1 + rng.below(200)).min(len);
                let piece = b[start..end].to_vec();
                let at = rng.below(b.len() + 1);
                b.splice(at..at, piece);
            }
            _ if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(64)).min(len);
                b.drain(start..end);
            }
            _ => {}
        }
    }
    b
}

/// Runs `f` on `input`; a panic or a slow answer fails the test with the input shown.
fn answers(what: &str, input: &[u8], f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    // A panic fails the test below anyway: no state survives it to be seen half-changed.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        panic!(
            "{what} panicked on this input:\n{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let took = t.elapsed();
    assert!(
        took < PER_INPUT,
        "{what} took {took:?} on this input:\n{:?}",
        String::from_utf8_lossy(input)
    );
    took
}

#[test]
fn scenario_loader_survives_mutated_scenarios() {
    let mut seeds = files_in(&root().join("scenarios"), "yaml");
    seeds.extend(files_in(&root().join("tests/corpus"), "yaml"));
    // Relative paths in the mutants resolve in the corpus folder, which holds real files.
    let path = root().join("tests/corpus/mutant.yaml");
    let mut rng = Rng(0x6e62_6873_7363_656e);
    let (mut refused, mut slowest) = (0, Duration::ZERO);
    for _ in 0..2000 {
        let input = mutate(&mut rng, &seeds);
        let text = String::from_utf8_lossy(&input).into_owned();
        let took = answers("scenario::load_str", &input, || {
            if scenario::load_str(&path, &text).is_err() {
                refused += 1;
            }
        });
        slowest = slowest.max(took);
    }
    // Most mutants are broken; if none were, the mutator would not be doing its job.
    assert!(refused > 1000, "only {refused} of 2000 mutants refused");
    eprintln!("{refused} of 2000 mutants refused; slowest answer {slowest:?}");
}

#[test]
fn login_pdu_parser_survives_mutated_pdus() {
    let seeds = files_in(&root().join("fuzz/seeds/iscsi_pdu"), "bin");
    assert!(seeds.len() >= 5, "the iSCSI seed PDUs are missing");
    let mut rng = Rng(0x6973_6373_6970_6475);
    let mut parsed = 0;
    for _ in 0..5000 {
        let input = mutate(&mut rng, &seeds);
        answers("iscsi_pdu::parse_login", &input, || {
            let _ = iscsi_pdu::opcode(&input);
            let _ = iscsi_pdu::pdu_len(&input);
            let _ = iscsi_pdu::parse_text(&input);
            if let Ok(pdu) = iscsi_pdu::parse_login(&input) {
                parsed += 1;
                let again = iscsi_pdu::parse_login(&iscsi_pdu::build_login(&pdu));
                assert_eq!(again.as_ref(), Ok(&pdu), "no round trip");
            }
        });
    }
    assert!(parsed > 100, "only {parsed} of 5000 mutants parsed");
}
