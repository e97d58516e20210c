//! Every test a page in `docs/` names as `file::test` exists, so the threat model and the
//! other pages cannot point at a renamed or deleted test.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The file a reference's first part names, if it names a test file: an integration
/// module (`core::…`), `secrets_at_rest::…`, `fuzzing::…`, or a path under `src/`.
fn test_file(reference: &str) -> Option<std::path::PathBuf> {
    let (file, _) = reference.split_once("::")?;
    let root = Path::new(ROOT);
    let candidates = [
        root.join("tests/integration").join(format!("{file}.rs")),
        root.join("tests").join(format!("{file}.rs")),
        root.join("src").join(format!("{file}.rs")),
        root.join(file),
    ];
    candidates
        .into_iter()
        .find(|path| path.is_file() && (file.ends_with(".rs") || !file.contains('/')))
}

#[test]
fn every_test_the_docs_name_exists() {
    let mut checked = 0;
    let mut missing = Vec::new();
    for page in [
        "SECURITY.md",
        "DEPLOYING.md",
        "ARCHITECTURE.md",
        "performance.md",
    ] {
        let text = std::fs::read_to_string(Path::new(ROOT).join("docs").join(page)).unwrap();
        for (i, quoted) in text.split('`').enumerate() {
            // Odd pieces are inside backticks; a test reference is lower-case `a::b_c`.
            if i % 2 == 0 || quoted.contains(['*', '…', ' ', '(']) {
                continue;
            }
            let Some((_, name)) = quoted.rsplit_once("::") else {
                continue;
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                continue;
            }
            // `core::memory::x` runs `core.rs`'s `x` once per store.
            let Some(file) = test_file(quoted) else {
                continue;
            };
            if !name.contains('_') {
                continue; // `error::chain`, `session::MAX_…`: API items, not tests
            }
            checked += 1;
            let source = std::fs::read_to_string(&file).unwrap();
            if !source.contains(&format!("fn {name}(")) {
                missing.push(format!(
                    "{page}: `{quoted}` ({} has no `fn {name}`)",
                    file.display()
                ));
            }
        }
    }
    assert!(missing.is_empty(), "missing tests:\n{}", missing.join("\n"));
    assert!(
        checked >= 30,
        "only {checked} test references found: is the parser broken?"
    );
    println!("{checked} test references in docs/ resolve");
}
