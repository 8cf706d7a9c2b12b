//! The `sluice plugin` commands, run as a user runs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::plugin_path;

const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/samples/telemetry.jsonl"
);

fn sluice(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn plugin(name: &str) -> String {
    plugin_path(name).to_string_lossy().into_owned()
}

#[test]
fn plugin_test_prints_routes_and_dead_letters() {
    let (ok, stdout, stderr) = sluice(&[
        "plugin",
        "test",
        &plugin("router"),
        "--input",
        SAMPLE,
        "--config-json",
        r#"{"routes":[{"name":"alerts","when":{"field":"temperature","gt":80}}]}"#,
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("[alerts] ")).count(),
        2,
        "{stdout}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("[default] ")).count(),
        9,
        "{stdout}"
    );
    let dead: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("[dead_letter] "))
        .collect();
    assert_eq!(dead.len(), 1, "{stdout}");
    assert!(
        dead[0].contains("invalid JSON") && dead[0].contains("truncated"),
        "{stdout}"
    );
}

#[test]
fn plugin_test_takes_dotted_config_entries() {
    let (ok, stdout, stderr) = sluice(&[
        "plugin",
        "test",
        &plugin("filter"),
        "-i",
        SAMPLE,
        "-c",
        "when.field=site",
        "-c",
        "when.eq=south",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("[default] "))
            .count(),
        5,
        "{stdout}"
    );
}

#[test]
fn plugin_test_runs_every_first_party_plugin_on_the_sample() {
    let cases: &[(&str, &[&str])] = &[
        (
            "map",
            &[
                "-c",
                "convert.temperature=celsius_to_fahrenheit",
                "-c",
                "drop=[\"site\"]",
            ],
        ),
        ("dedup", &["-c", "field=seq"]),
        ("sensor-sim", &["-c", "devices=4", "--ticks", "3"]),
        ("sysstat", &["--dir", "/proc:/proc", "--ticks", "2"]),
        (
            "anomaly",
            &[
                "--model",
                concat!(
                    "anomaly=",
                    env!("CARGO_MANIFEST_DIR"),
                    "/../models/anomaly.onnx"
                ),
            ],
        ),
    ];
    for (name, extra) in cases {
        let path = plugin(name);
        let mut args = vec!["plugin", "test", path.as_str(), "-i", SAMPLE];
        args.extend_from_slice(extra);
        let (ok, stdout, stderr) = sluice(&args);
        assert!(ok, "{name}: {stderr}");
        assert!(
            stdout.lines().any(|l| l.starts_with("[default] {")),
            "{name} printed no event:\n{stdout}"
        );
    }
}

#[test]
fn plugin_test_reports_a_missing_input_clearly() {
    let (ok, _, stderr) = sluice(&[
        "plugin",
        "test",
        &plugin("filter"),
        "-c",
        "when.field=x",
        "-c",
        "when.exists=true",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("a processor needs --input FILE"),
        "{stderr}"
    );
}

#[test]
fn plugin_inspect_shows_world_exports_and_imports() {
    let (ok, stdout, stderr) = sluice(&["plugin", "inspect", &plugin("dedup")]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("world:   sluice:plugin/processor"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  process: func(batch: record) -> result"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sluice:plugin/state@0.1.2: instance { get, put, delete, scan-prefix }"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("sha256:  ") && l.len() == 9 + 64),
        "{stdout}"
    );
}

#[test]
fn plugin_new_scaffolds_a_crate_that_builds_and_passes_plugin_test() {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_string_lossy().into_owned();
    let (ok, _, stderr) = sluice(&["plugin", "new", "my-tagger", "--dir", &dir_str]);
    assert!(ok, "{stderr}");
    let root = dir.path().join("my-tagger");
    // Reuse one target directory across runs so this test compiles the SDK only once.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("scaffold-test");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/my_tagger.wasm");
    let sample = root.join("sample.jsonl");
    let (ok, stdout, stderr) = sluice(&[
        "plugin",
        "test",
        &wasm.to_string_lossy(),
        "-i",
        &sample.to_string_lossy(),
        "-c",
        "tag=demo",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout,
        "[default] {\"device_id\":\"sensor-001\",\"tagged_by\":\"demo\",\"temperature\":21.5}\n\
         [default] {\"device_id\":\"sensor-002\",\"tagged_by\":\"demo\",\"temperature\":88.0}\n"
    );
    let (ok, _, stderr) = sluice(&["plugin", "new", "my-tagger", "--dir", &dir_str]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
}

/// `plugin new --lang L`, built with that language's toolchain, passes `plugin test`.
fn scaffold_in(language: &str, build_env: &[(&str, std::ffi::OsString)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_string_lossy().into_owned();
    let (ok, _, stderr) = sluice(&[
        "plugin", "new", "tagger", "--lang", language, "--dir", &dir_str,
    ]);
    assert!(ok, "{stderr}");
    let root = dir.path().join("tagger");
    let build = Command::new(root.join("build"))
        .envs(build_env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{language}: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let (ok, stdout, stderr) = sluice(&[
        "plugin",
        "test",
        &root.join("tagger.wasm").to_string_lossy(),
        "-i",
        &root.join("sample.jsonl").to_string_lossy(),
        "-c",
        "tag=demo",
    ]);
    assert!(ok, "{language}: {stderr}");
    stdout
}

const TAGGED: &str = "[default] {\"device_id\":\"sensor-001\",\"temperature\":21.5,\"tagged_by\":\"demo\"}\n\
                      [default] {\"device_id\":\"sensor-002\",\"temperature\":88.0,\"tagged_by\":\"demo\"}\n";

#[test]
fn plugin_new_scaffolds_python_javascript_and_c_plugins_that_pass_plugin_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    assert_eq!(scaffold_in("python", &[]), TAGGED);
    let node = root.join(".tools/node/node_modules/.bin/componentize-js");
    assert_eq!(
        scaffold_in("js", &[("COMPONENTIZE_JS", node.into())]),
        TAGGED
    );
    let tool = target.join("debug/sluice-c-plugin-tool");
    assert_eq!(
        scaffold_in("c", &[("SLUICE_C_PLUGIN_TOOL", tool.into())]),
        TAGGED
    );
}

#[test]
fn validate_also_loads_plugins_and_runs_their_init() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[plugins.filter]
path = "{filter}"
[plugins.sim]
path = "{sim}"
[sources.in]
type = "http"
listen = "127.0.0.1:0"
[transforms.hot]
type = "wasm"
plugin = "filter"
inputs = ["in"]
config = {{ when = {{ field = "t", hotter = 1 }} }}
[transforms.wrong]
type = "wasm"
plugin = "sim"
inputs = ["hot"]
[sinks.out]
type = "console"
inputs = ["wrong"]
"#,
            filter = plugin("filter"),
            sim = plugin("sensor-sim")
        ),
    )
    .unwrap();
    let (ok, _, stderr) = sluice(&["validate", &config.to_string_lossy()]);
    assert!(!ok);
    assert!(stderr.contains("stage `hot` (plugin `filter`): init failed: invalid plugin config: unknown operator `hotter`"), "{stderr}");
    assert!(stderr.contains("plugin `sim` exports `init`, `collect` so it is a `collector`, but stage `wrong` needs a `processor` plugin"), "{stderr}");
    assert!(stderr.contains("2 problem(s) in"), "{stderr}");
}

#[test]
fn model_inspect_shows_inputs_outputs_opsets_and_the_pin() {
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/anomaly.onnx");
    let (ok, stdout, stderr) = sluice(&["model", "inspect", model]);
    assert!(ok, "{stderr}");
    for line in [
        "sha256:   c9fd4b8f393547314b1d9c88b1163d5aec84a253b3d058630d935a23efc6e3c2",
        "opsets:   ai.onnx.ml 1, ai.onnx 17",
        "  features: f32 [-1, 3]",
        "  label: i64 [-1]",
        "  probabilities: f32 [-1, 2]",
        "[models.anomaly]",
        r#"inputs = [{ name = "features", type = "f32", shape = [-1, 3] }]"#,
    ] {
        assert!(stdout.contains(line), "missing `{line}` in:\n{stdout}");
    }
    let (ok, _, stderr) = sluice(&["model", "inspect", "/nowhere/x.onnx"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read /nowhere/x.onnx: No such file or directory"),
        "{stderr}"
    );
}
