//! Test-only input generator for the parsers' fuzz tests, on stable Rust.
//!
//! Each test hands it a few valid seeds; it mutates them the way coverage-guided
//! fuzzers do (insert, delete, duplicate a span, splice two seeds, swap in
//! troublesome characters) with a seeded generator, so a failure names the
//! iteration that reproduces it. `SLUICE_FUZZ_ITERS` runs longer than CI's short
//! pass; `SLUICE_FUZZ_SEED` picks another sequence.

/// Characters that have broken parsers before: non-ASCII whitespace, multi-byte
/// characters next to ASCII delimiters, controls, signs and separators.
const TRICKY: &[char] = &[
    '\u{a0}', '\u{2003}', '\u{3000}', 'é', '😀', '\0', '\r', '\n', '\t', ' ', '(', ')', '[', ']',
    '{', '}', ',', ':', ';', '/', '\\', '.', '-', '+', '*', '$', '%', '=', '"', '\'', '|', '&',
    '<', '>', '!', '0', '9', 'e', 'x', '_', '#', '@',
];

pub fn iterations(default: usize) -> usize {
    std::env::var("SLUICE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rng() -> fastrand::Rng {
    let seed = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_51ce);
    fastrand::Rng::with_seed(seed)
}

/// Calls `check` with `n` mutated texts; the seeds themselves come first.
pub fn texts(seeds: &[&str], n: usize, mut check: impl FnMut(&str)) {
    let mut rng = rng();
    for seed in seeds {
        check(seed);
    }
    let seeds: Vec<Vec<char>> = seeds.iter().map(|s| s.chars().collect()).collect();
    for _ in 0..n {
        let mut text = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..=4) {
            mutate(&mut rng, &mut text, &seeds, |rng| {
                TRICKY[rng.usize(..TRICKY.len())]
            });
        }
        check(&text.iter().collect::<String>());
    }
}

/// Calls `check` with `n` mutated byte strings; the seeds themselves come first.
pub fn bytes(seeds: &[&[u8]], n: usize, mut check: impl FnMut(&[u8])) {
    let mut rng = rng();
    for seed in seeds {
        check(seed);
    }
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|s| s.to_vec()).collect();
    for _ in 0..n {
        let mut data = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..=4) {
            mutate(&mut rng, &mut data, &seeds, |rng| {
                if rng.bool() {
                    rng.u8(..)
                } else {
                    *b"\r\n :;+-0fF \t\x00\xff"
                        .get(rng.usize(..16))
                        .unwrap_or(&b'x')
                }
            });
        }
        check(&data);
    }
}

fn mutate<T: Clone>(
    rng: &mut fastrand::Rng,
    text: &mut Vec<T>,
    seeds: &[Vec<T>],
    tricky: impl Fn(&mut fastrand::Rng) -> T,
) {
    let at = rng.usize(..=text.len());
    match rng.u8(..6) {
        0 => text.insert(at, tricky(rng)),
        1 if at < text.len() => text[at] = tricky(rng),
        2 if !text.is_empty() => {
            let end = rng.usize(at..=text.len());
            text.drain(at..end);
        }
        3 => {
            // Repeat a span many times: deep nesting, long chains, huge numbers.
            let end = rng.usize(at..=text.len().min(at + 8));
            let span: Vec<T> = text[at..end].to_vec();
            let times = rng.usize(1..200);
            for _ in 0..times {
                text.splice(at..at, span.iter().cloned());
            }
        }
        4 => {
            let other = &seeds[rng.usize(..seeds.len())];
            let from = rng.usize(..=other.len());
            text.splice(at..at, other[from..].iter().cloned());
        }
        _ => text.truncate(at),
    }
}
