//! Repository rules, checked as plain tests (`cargo test -p xtask`).

#![cfg(test)]

use std::fs;
use std::path::PathBuf;

use crate::project_root;

/// Adapter crates: they may depend on core (and the testkit for tests), never on each other.
const ADAPTERS: &[&str] = &[
    "sprintlens-sqlite",
    "sprintlens-objectstore",
    "sprintlens-memory",
    "sprintlens-postgres",
    "sprintlens-redis",
    "sprintlens-clickhouse",
];

fn crates() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(project_root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

fn manifest(p: &std::path::Path) -> String {
    fs::read_to_string(p.join("Cargo.toml")).unwrap()
}

#[test]
fn folders_are_named_like_their_crates() {
    for (dir, path) in crates() {
        let m = manifest(&path);
        assert!(
            m.contains(&format!("name = \"{dir}\"")),
            "crates/{dir} must hold the crate {dir}"
        );
    }
}

#[test]
fn every_crate_uses_workspace_lints_and_has_docs() {
    for (dir, path) in crates() {
        let m = manifest(&path);
        assert!(
            m.contains("[lints]\nworkspace = true"),
            "{dir}: add `[lints] workspace = true`"
        );
        assert!(m.contains("description = "), "{dir}: needs a description");
        let readme = fs::read_to_string(path.join("README.md")).unwrap_or_default();
        assert!(
            readme.lines().count() >= 3,
            "{dir}: README.md must say what the crate is"
        );
        let root = ["src/lib.rs", "src/main.rs"]
            .iter()
            .map(|f| path.join(f))
            .find(|p| p.is_file())
            .unwrap();
        let src = fs::read_to_string(root).unwrap();
        assert!(
            src.contains("#![doc = include_str!(\"../README.md\")]"),
            "{dir}: crate docs come from its README"
        );
    }
}

#[test]
fn adapters_never_depend_on_each_other_and_core_on_none() {
    for (dir, path) in crates() {
        let m = manifest(&path);
        let deps = m.split("[dev-dependencies]").next().unwrap();
        if ADAPTERS.contains(&dir.as_str()) {
            for other in ADAPTERS.iter().filter(|a| **a != dir) {
                assert!(!deps.contains(other), "{dir} must not depend on {other}");
            }
            assert!(
                !deps.contains("sprintlens-testkit"),
                "{dir}: testkit only as a dev-dependency"
            );
        }
        if dir == "sprintlens-core" {
            let deps = m.split("[dependencies]").nth(1).unwrap_or_default();
            assert!(
                !deps.contains("sprintlens-"),
                "sprintlens-core depends on no sprintlens crate"
            );
        }
    }
}

#[test]
fn every_adapter_has_a_docs_page() {
    for a in ADAPTERS {
        let page = project_root()
            .join("docs/adapters")
            .join(format!("{}.md", a.trim_start_matches("sprintlens-")));
        let text = fs::read_to_string(&page).unwrap_or_default();
        for section in ["## Capabilities", "## URL", "## Environment"] {
            assert!(
                text.contains(section),
                "{} needs a `{section}` section",
                page.display()
            );
        }
    }
}

#[test]
fn readme_names_the_test_command_ci_runs() {
    let readme = fs::read_to_string(project_root().join("README.md")).unwrap();
    let command = readme
        .lines()
        .find_map(|l| l.strip_prefix("<!-- test-command: ")?.strip_suffix(" -->"))
        .expect("README.md names its test command");
    assert_eq!(command, "cargo xtask test");
    let ci = fs::read_to_string(project_root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == format!("exec {command}")),
        ".ci/run must run exactly the README's test command"
    );
}
