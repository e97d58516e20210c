//! The public API's foreign crates are the allow-list in Cargo.toml
//! (`package.metadata.cargo_check_external_types`): every crate src/lib.rs re-exports is
//! on it, and every crate on it is either re-exported or one whose traits and errors the
//! API only implements or converts into. A stable stand-in for `cargo
//! check-external-types`, which needs nightly.

const LIB: &str = include_str!("../../src/lib.rs");
const MANIFEST: &str = include_str!("../../Cargo.toml");

/// On the allow-list without a re-export: the API implements their traits (`Layer`,
/// `Service`, `Serialize`) or converts into their error type (`tonic::Status`), which an
/// app names through its own dependency on them.
const NOT_RE_EXPORTED: [&str; 4] = ["serde", "tonic", "tower_layer", "tower_service"];

fn re_exported_crates() -> Vec<String> {
    let mut crates = Vec::new();
    for line in LIB.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.trim_end_matches(';');
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(list) => list
                .trim_end_matches('}')
                .split(',')
                .map(str::trim)
                .collect(),
            None => vec![rest],
        };
        // A bare crate name (no path): a crate re-export, not one of our items.
        crates.extend(
            names
                .into_iter()
                .filter(|name| !name.is_empty() && !name.contains("::"))
                .map(str::to_owned),
        );
    }
    crates.sort();
    crates
}

fn allowed_crates() -> Vec<String> {
    let section = MANIFEST
        .split("[package.metadata.cargo_check_external_types]")
        .nth(1)
        .expect("Cargo.toml has the allow-list");
    let list = section.split(']').next().unwrap();
    let mut crates: Vec<String> = list
        .split('"')
        .skip(1)
        .step_by(2)
        .map(|entry| entry.trim_end_matches("::*").to_owned())
        .collect();
    crates.sort();
    crates
}

#[test]
fn the_re_exported_crates_are_the_documented_allow_list() {
    let re_exported = re_exported_crates();
    let allowed = allowed_crates();
    assert!(
        re_exported.len() >= 8,
        "parsed {re_exported:?} from src/lib.rs"
    );
    for name in &re_exported {
        assert!(
            allowed.contains(name),
            "src/lib.rs re-exports `{name}`, which the allow-list in Cargo.toml lacks"
        );
    }
    for name in &allowed {
        assert!(
            re_exported.contains(name) || NOT_RE_EXPORTED.contains(&name.as_str()),
            "`{name}` is allowed in the public API but neither re-exported nor a trait crate"
        );
    }
    println!("public API crates: re-exported {re_exported:?}, traits only {NOT_RE_EXPORTED:?}");
}
