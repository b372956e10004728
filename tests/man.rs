//! The manual pages: `man/locksup.1` is exactly what the clap definition and
//! `man/src/` render (`LOCKSUP_BLESS=1 cargo test --test man` rewrites it),
//! `man/locksup.toml.5` documents every configuration key, and every page
//! (with the hand-written `man/locksup-serve.8`) lints clean with mandoc
//! when it is installed (CI installs it).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn locksup_1_is_up_to_date() {
    let want = locksup::testing::manpage::locksup_1();
    let path = Path::new(ROOT).join("man/locksup.1");
    if std::env::var_os("LOCKSUP_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write man/locksup.1");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "man/locksup.1 is stale: run `LOCKSUP_BLESS=1 cargo test --test man` and commit it"
    );
}

/// `key` names of `config.example.toml` by section, commented out or not.
fn example_keys() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut section = String::new();
    for line in read("config.example.toml").lines() {
        let t = line.trim().trim_start_matches('#').trim();
        if let Some(s) = t.strip_prefix('[') {
            section = s.trim_matches(['[', ']']).to_string();
            continue;
        }
        if let Some((k, _)) = t.split_once('=') {
            let k = k.trim();
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                out.insert((section.clone(), k.to_string()));
            }
        }
    }
    out
}

#[test]
fn locksup_toml_5_documents_every_key() {
    let page = read("man/locksup.toml.5");
    let keys = example_keys();
    assert!(keys.len() >= 10, "{keys:?}");
    for (section, key) in keys {
        assert!(
            page.contains(&format!(".B {key}")) || page.contains(&format!("\\fB{key}\\fR")),
            "locksup.toml(5) does not document [{section}] {key}"
        );
        assert!(
            page.contains(&format!("[{section}]")) || page.contains(&format!("[[{section}]]")),
            "locksup.toml(5) has no section [{section}]"
        );
    }
}

#[test]
fn pages_lint_clean_with_mandoc() {
    let Ok(out) = Command::new("mandoc").arg("-V").output() else {
        eprintln!("mandoc not installed; skipping the lint (CI installs it)");
        return;
    };
    let _ = out;
    for page in ["man/locksup.1", "man/locksup.toml.5", "man/locksup-serve.8"] {
        let out = Command::new("mandoc")
            .args(["-Tlint", "-W", "warning"])
            .arg(Path::new(ROOT).join(page))
            .output()
            .expect("run mandoc");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.trim().is_empty(),
            "{page}:\n{text}"
        );
    }
}
