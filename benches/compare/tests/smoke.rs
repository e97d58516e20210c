//! The whole bench, tiny: real server processes, real HTTP, the report on stdout.

use std::process::Command;

#[test]
fn a_short_run_prints_the_side_by_side_table() {
    let output = Command::new(env!("CARGO_BIN_EXE_tas-compare"))
        .args([
            "--rounds",
            "2",
            "--seconds",
            "0.2",
            "--connections",
            "2",
            "--users",
            "3",
        ])
        .args([
            "--client",
            "builtin",
            "--scenarios",
            "ts-memory,ours-memory,ours-cache-memory",
        ])
        .output()
        .expect("run tas-compare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("| path | tower-sessions 0.14 | ours | target | status |"),
        "{stdout}"
    );
    for row in [
        "| memory store hit | ",
        "| cookie-cache hit, memory behind | ",
    ] {
        assert!(stdout.contains(row), "{row} missing from\n{stdout}");
    }
    for scenario in ["bare", "ts-memory", "ours-memory", "ours-cache-memory"] {
        let row = stdout
            .lines()
            .find(|line| line.starts_with(&format!("| {scenario} |")))
            .unwrap_or_else(|| panic!("{scenario} missing from\n{stdout}"));
        // The last column: every request of every round was answered with a 200.
        assert!(row.ends_with("| 0 |"), "{row}");
    }
    assert_eq!(stderr.matches("round 2/2").count(), 4, "{stderr}");
}

#[test]
fn unknown_scenarios_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_tas-compare"))
        .args(["--scenarios", "no-such-thing"])
        .output()
        .expect("run tas-compare");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scenario"));
}
