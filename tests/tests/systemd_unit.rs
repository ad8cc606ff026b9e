//! The shipped user unit: parsed and checked for what the daemon relies on, and
//! verified by `systemd-analyze` where the machine has it; the units rendered
//! from it (`bastionctl service unit`, as `service install` and the Debian
//! package use it) differ from it in ExecStart only.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use bastion_tests::harness::bins;

const UNIT: &str = include_str!("../../systemd/bastiond.service");

/// `section -> key -> values` (a key may repeat, as systemd allows).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            unit.entry(name.to_owned()).or_default();
            continue;
        }
        let section = section
            .as_ref()
            .unwrap_or_else(|| panic!("line {}: key outside a section", n + 1));
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not key=value: {line}", n + 1));
        unit.get_mut(section)
            .expect("section exists")
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    unit
}

fn get<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    unit.get(section)
        .and_then(|s| s.get(key))
        .and_then(|v| v.last())
        .unwrap_or_else(|| panic!("[{section}] {key} missing"))
}

#[test]
fn unit_has_what_the_daemon_relies_on() {
    let unit = parse(UNIT);
    assert_eq!(
        unit.keys().collect::<Vec<_>>(),
        ["Install", "Service", "Unit"]
    );
    // READY=1 / STOPPING=1 / WATCHDOG=1 come from the daemon's main process.
    assert_eq!(get(&unit, "Service", "Type"), "notify");
    assert_eq!(get(&unit, "Service", "NotifyAccess"), "main");
    assert!(get(&unit, "Service", "WatchdogSec").ends_with('s'));
    // Works as shipped for `cargo install`; `bastionctl service install`
    // writes the real path instead.
    assert_eq!(get(&unit, "Service", "ExecStart"), "%h/.cargo/bin/bastiond");
    // The user's PATH and AZURE_* settings, never in the unit itself.
    assert_eq!(
        get(&unit, "Service", "EnvironmentFile"),
        "-%E/bastiond/environment"
    );
    assert!(get(&unit, "Service", "ExecReload").contains("-HUP $MAINPID"));
    assert_eq!(get(&unit, "Service", "Restart"), "on-failure");
    // User units run without privileges: options that need them would fail the start.
    for key in ["User", "Group", "CapabilityBoundingSet", "PrivateDevices"] {
        assert!(
            !unit["Service"].contains_key(key),
            "{key} does not work in a user unit"
        );
    }
    assert_eq!(get(&unit, "Install", "WantedBy"), "default.target");
}

/// Runs `systemd-analyze verify --user` on the unit text; `None` without systemd.
fn systemd_verify(text: &str) -> Option<(bool, String)> {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    // The user manager that verify instantiates needs a private runtime directory.
    let runtime = dir.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("bastiond.service");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--user", "--man=no"])
        .arg(&path)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Some((out.status.success() && stderr.trim().is_empty(), stderr))
}

/// `bastionctl service unit --bastiond PATH`: the template rendered for PATH.
fn rendered_unit(bastiond: &Path) -> String {
    let out = Command::new(bins::path("bastionctl").unwrap())
        .args(["service", "unit", "--bastiond"])
        .arg(bastiond)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn rendered_units_differ_from_the_template_in_exec_start_only() {
    let packaged = rendered_unit(Path::new("/usr/bin/bastiond"));
    assert_eq!(
        get(&parse(&packaged), "Service", "ExecStart"),
        "/usr/bin/bastiond"
    );
    let changed: Vec<(&str, &str)> = UNIT
        .lines()
        .zip(packaged.lines())
        .filter(|(template, rendered)| template != rendered)
        .collect();
    assert_eq!(
        changed,
        [(
            "ExecStart=%h/.cargo/bin/bastiond",
            "ExecStart=/usr/bin/bastiond"
        )]
    );
    assert_eq!(UNIT.lines().count(), packaged.lines().count());
    // Relative paths are refused: systemd would not run them.
    let out = Command::new(bins::path("bastionctl").unwrap())
        .args(["service", "unit", "--bastiond", "bin/bastiond"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    // The built daemon, wherever the target directory is (CARGO_TARGET_DIR).
    let bastiond = bins::path("bastiond").unwrap();
    let unit = rendered_unit(&bastiond);
    let Some((ok, stderr)) = systemd_verify(&unit) else {
        eprintln!("systemd-analyze not installed: the parsed checks above stand in for it");
        return;
    };
    assert!(ok, "systemd-analyze verify: {stderr}");
    // The same check must reject a broken unit, or it proves nothing.
    let broken = unit.replace("Type=notify", "Type=sometimes");
    let (ok, stderr) = systemd_verify(&broken).unwrap();
    assert!(!ok && stderr.contains("sometimes"), "{stderr}");
}
