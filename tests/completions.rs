//! Shell completions: `locksup completions SHELL` prints what clap_complete
//! generates, the packaged copies in `completions/` are up to date
//! (`LOCKSUP_BLESS=1 cargo test --test completions` rewrites them), and the
//! bash script loads and completes subcommands and options.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_locksup");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const FILES: [(&str, &str); 3] = [
    ("bash", "completions/locksup.bash"),
    ("zsh", "completions/_locksup"),
    ("fish", "completions/locksup.fish"),
];

fn generated(shell: &str) -> Vec<u8> {
    let out = Command::new(BIN)
        .args(["completions", shell])
        .env("LOCKSUP_CONFIG", "/dev/null")
        .output()
        .expect("run locksup completions");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    out.stdout
}

#[test]
fn packaged_completions_are_up_to_date() {
    for (shell, file) in FILES {
        let want = generated(shell);
        let path = Path::new(ROOT).join(file);
        if std::env::var_os("LOCKSUP_BLESS").is_some() {
            std::fs::write(&path, &want).expect("write completions");
            continue;
        }
        let have = std::fs::read(&path).unwrap_or_default();
        assert!(
            have == want,
            "{file} is stale: run `LOCKSUP_BLESS=1 cargo test --test completions` and commit it"
        );
    }
}

#[test]
fn bash_completion_completes_subcommands_and_options() {
    let script = Path::new(ROOT).join("completions/locksup.bash");
    let probe = format!(
        "source {}; COMP_WORDS=(locksup run --ti); COMP_CWORD=2; COMP_LINE='locksup run --ti'; \
         _locksup locksup --ti run; printf '%s\\n' \"${{COMPREPLY[@]}}\"; \
         COMP_WORDS=(locksup r); COMP_CWORD=1; _locksup locksup r locksup; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l == "--timeout"), "{text}");
    assert!(text.lines().any(|l| l == "run"), "{text}");
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["completions", "tcsh"])
        .env("LOCKSUP_CONFIG", "/dev/null")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("locksup: "), "{err}");
}
