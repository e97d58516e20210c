//! Replays every file under `fuzz/regressions/<target>/` (minimised inputs the fuzzers
//! found, and the recreated inputs of the issue 14 findings) through the same property
//! checks the fuzz targets run (`tower_auth_session::fuzzing`), and the seed inputs the
//! generator writes. Needs feature `fuzzing` (`cargo test --all-features` has it).
#![cfg(feature = "fuzzing")]

use std::path::{Path, PathBuf};

use tower_auth_session::fuzzing;

/// The check a fuzz target runs; `None` when it needs a feature this build lacks.
type Check = Option<fn(&[u8])>;

/// Every target, with its check.
fn targets() -> Vec<(&'static str, Check)> {
    #[cfg(feature = "redis")]
    let (redis_value, revocation_message): (Check, Check) = (
        Some(fuzzing::check_redis_value),
        Some(fuzzing::check_revocation_message),
    );
    #[cfg(not(feature = "redis"))]
    let (redis_value, revocation_message): (Check, Check) = (None, None);
    vec![
        ("cookie_header", Some(fuzzing::check_cookie_header)),
        ("token", Some(fuzzing::check_token)),
        ("cookie_cache", Some(fuzzing::check_cookie_cache)),
        ("client_facts", Some(fuzzing::check_client_facts)),
        ("cross_site", Some(fuzzing::check_cross_site)),
        ("redis_value", redis_value),
        ("layer", Some(fuzzing::check_layer)),
        ("revocation_message", revocation_message),
    ]
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file in `dir`, reporting every failing file at once.
fn replay(dir: &Path, check: fn(&[u8])) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let files = files(dir);
    for file in &files {
        let bytes = std::fs::read(file).expect("readable regression file");
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            failures.push(file.display().to_string());
        }
    }
    (files.len(), failures)
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_regression_input_passes_its_target_properties() {
    let root = fuzz_dir().join("regressions");
    let mut replayed = 0;
    let mut failures = Vec::new();
    for (target, check) in targets() {
        let Some(check) = check else { continue };
        let (count, failed) = replay(&root.join(target), check);
        replayed += count;
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "regression inputs failing: {failures:#?}"
    );
    // The issue 14 findings alone are 17 files; all of them need feature `redis`'s
    // targets or not, at least the ones of the always-built targets must be there.
    assert!(
        replayed >= 10,
        "only {replayed} regression files found under {root:?}"
    );
}

/// Every directory under `fuzz/regressions/` is a known target, so a file put in a
/// misspelt directory is not silently skipped.
#[test]
fn regression_directories_name_targets() {
    let names: Vec<&str> = targets().into_iter().map(|(name, _)| name).collect();
    for entry in std::fs::read_dir(fuzz_dir().join("regressions")).expect("fuzz/regressions") {
        let entry = entry.expect("readable directory");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            names.contains(&name.as_str()),
            "unknown target directory {name}"
        );
    }
}

/// The checks pass on a few plain inputs too, including empty ones (a check that fails
/// on everything would make every regression file look like a fix).
#[test]
fn checks_pass_on_plain_inputs() {
    for (target, check) in targets() {
        let Some(check) = check else { continue };
        for input in [
            &b""[..],
            b"\x00",
            b"\x01abc",
            b"\x02\n\n",
            b"\xff\xff\xff\xff",
        ] {
            assert!(
                std::panic::catch_unwind(|| check(input)).is_ok(),
                "{target} fails on {input:?}"
            );
        }
    }
}

/// The layer target's placeholders reach the cache hit and the store: a request with the
/// live token (cookie, with or without its cache, or bearer) is served its session, one
/// with a forged token is not.
#[test]
fn layer_placeholders_reach_the_session() {
    let [token, data, _] = fuzzing::cookie_names();
    let served = |input: String| fuzzing::layer_serves(input.as_bytes());
    assert!(served(format!("\x00cookie:{token}={{T}}; {data}={{C}}")));
    assert!(served(format!(
        "\x01cookie:{token}={{T}}\nx-forwarded-for:203.0.113.9"
    )));
    assert!(served("\x00authorization:Bearer {T}".to_owned()));
    let forged = fuzzing::signed_token([5u8; 32]);
    assert!(!served(format!(
        "\x00cookie:{token}={forged}; {data}={{C}}"
    )));
    assert!(!served(format!("\x00cookie:{token}={{T}}; {token}={{T}}")));
}
