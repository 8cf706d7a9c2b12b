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
        stdout.contains("sluice:plugin/state@0.1.3: instance { get, put, delete, scan-prefix }"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("sha256:  ") && l.len() == 9 + 64),
        "{stdout}"
    );
}

fn sluice_env(args: &[&str], env: &[(&str, PathBuf)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `plugin new tagger --lang L`, then `plugin build` on its folder (which prints the
/// component's path), then `plugin test` of that component on the template's sample.
fn scaffold_build_test(language: &str, env: &[(&str, PathBuf)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_string_lossy().into_owned();
    let (ok, _, stderr) = sluice(&[
        "plugin", "new", "tagger", "--lang", language, "--dir", &dir_str,
    ]);
    assert!(ok, "{stderr}");
    let root = dir.path().join("tagger");
    let (ok, stdout, stderr) = sluice_env(&["plugin", "build", &root.to_string_lossy()], env);
    assert!(ok, "{language}: {stderr}");
    let component = PathBuf::from(stdout.trim());
    assert!(component.is_file(), "{language}: {stdout}");
    let (ok, stdout, stderr) = sluice(&[
        "plugin",
        "test",
        &component.to_string_lossy(),
        "-i",
        &root.join("sample.jsonl").to_string_lossy(),
        "-c",
        "tag=demo",
    ]);
    assert!(ok, "{language}: {stderr}");
    let (ok, _, stderr) = sluice(&[
        "plugin", "new", "tagger", "--lang", language, "--dir", &dir_str,
    ]);
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    stdout
}

#[test]
fn plugin_new_rust_template_builds_with_plugin_build_and_passes_plugin_test() {
    // Reuse one target directory across runs so this test compiles the SDK only once.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("scaffold-test");
    assert_eq!(
        scaffold_build_test("rust", &[("CARGO_TARGET_DIR", target)]),
        "[default] {\"device_id\":\"sensor-001\",\"tagged_by\":\"demo\",\"temperature\":21.5}\n\
         [default] {\"device_id\":\"sensor-002\",\"tagged_by\":\"demo\",\"temperature\":88.0}\n"
    );
}

/// What the C and Python templates print: the payload as sent, with the tag appended.
const TAGGED: &str = "[default] {\"device_id\":\"sensor-001\",\"temperature\":21.5,\"tagged_by\":\"demo\"}\n\
                      [default] {\"device_id\":\"sensor-002\",\"temperature\":88.0,\"tagged_by\":\"demo\"}\n";

#[test]
fn plugin_new_python_template_builds_with_plugin_build_and_passes_plugin_test() {
    assert_eq!(scaffold_build_test("python", &[]), TAGGED);
}

#[test]
fn plugin_new_javascript_template_builds_with_plugin_build_and_passes_plugin_test() {
    // JSON.stringify writes 88.0 as 88.
    assert_eq!(scaffold_build_test("js", &[]), TAGGED.replace("88.0", "88"));
}

#[test]
fn plugin_new_c_template_builds_with_plugin_build_and_passes_plugin_test() {
    assert_eq!(scaffold_build_test("c", &[]), TAGGED);
}

#[test]
fn plugin_test_builds_a_plugin_folder_first() {
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_string_lossy().into_owned();
    let (ok, _, stderr) = sluice(&["plugin", "new", "tagger", "--lang", "c", "--dir", &dir_str]);
    assert!(ok, "{stderr}");
    let root = dir.path().join("tagger");
    std::fs::write(root.join("bad.jsonl"), "[1, 2]\n").unwrap();
    let (ok, stdout, stderr) = sluice(&[
        "plugin",
        "test",
        &root.to_string_lossy(),
        "-i",
        &root.join("bad.jsonl").to_string_lossy(),
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "[dead_letter] expected a JSON object | [1, 2]\n");
    assert!(root.join("tagger.wasm").is_file());
}

#[test]
fn plugin_build_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = sluice(&["plugin", "build", &dir.path().to_string_lossy()]);
    assert!(!ok);
    assert!(
        stderr.contains("is not a plugin folder: it has none of Cargo.toml, app.py, app.js, app.c"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("app.py"), "").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["plugin", "build", &dir.path().to_string_lossy()])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("`componentize-py` not found: Python plugins need it. Install it with `pip install componentize-py==0.25.1`; scripts/setup"),
        "{stderr}"
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

#[test]
fn run_refuses_a_postgresql_table_name_that_postgresql_would_cut_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let long = "t".repeat(49);
    std::fs::write(
        &config,
        format!(
            r#"
data_dir = "{data}"
[sources.in]
type = "http"
listen = "127.0.0.1:0"
[sinks.latest]
type = "serving"
inputs = ["in"]
table = "{long}"
key = "id"
public = true
postgres = "host=127.0.0.1 user=nobody"
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", &config.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the pipeline started with a table name PostgreSQL would cut");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!(
            "`table` `{long}` is 49 bytes; PostgreSQL keeps 48 of a table name after `sluice_serving_`"
        )),
        "{stderr}"
    );
}
