//! The README's demo (`tern-demo --exit`) runs to the end: Tern goes LIVE over ADS, the three
//! weight phases route as pushed, and no request fails during the shift.

#[test]
fn the_readme_demo_shifts_traffic_without_failures() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern-demo"))
        .arg("--exit")
        .output()
        .expect("tern-demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |weights: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(weights))
            .unwrap_or_else(|| panic!("no {weights} row in:\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // "100/0  initial  400 (100%)  0 (0%)": the pure phases are exact.
    assert_eq!(
        row("100/0")[2..],
        ["400", "(100%)", "0", "(0%)"],
        "{stdout}"
    );
    assert_eq!(
        row("0/100")[2..],
        ["0", "(0%)", "400", "(100%)"],
        "{stdout}"
    );
    let half: usize = row("50/50")[2].parse().expect("a count");
    assert!((140..=260).contains(&half), "about half to v1:\n{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}
