//! `sluice validate`: every class of config problem is reported with its message, its
//! line and column, and a hint — and all of them at once.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{errors, only, position_of};
use sluice::config::{Config, ConfigErrors};
use sluice::sinks::file::FileSinkConfig;
use sluice::sources::http::HttpSourceConfig;
use sluice::sources::mqtt::MqttSourceConfig;

fn plugin(name: &str) -> String {
    common::plugin_path(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// A valid pipeline: MQTT in, a filter with routes, files and console out.
fn valid() -> String {
    format!(
        r#"
[plugins.filter]
path = "{filter}"

[plugins.router]
path = "{router}"

[sources.in]
type = "mqtt"
url = "mqtt://127.0.0.1:1883"
topics = ["sensors/#"]

[transforms.hot]
type = "wasm"
plugin = "filter"
inputs = ["in"]
config = {{ when = {{ field = "t", gt = 80 }} }}

[transforms.route]
type = "wasm"
plugin = "router"
inputs = ["hot"]
routes = ["alerts"]
config = {{ routes = [{{ name = "alerts", when = {{ field = "t", gt = 90 }} }}] }}

[sinks.files]
type = "file"
inputs = ["route"]
path = "out"

[sinks.screen]
type = "console"
inputs = ["route.alerts", "hot.dead_letter"]
"#,
        filter = plugin("filter"),
        router = plugin("router")
    )
}

#[test]
fn the_valid_config_loads() {
    let config = Config::from_text(Path::new("pipeline.toml"), &valid(), |_| None).unwrap();
    assert_eq!(config.transforms["route"].inputs[0].stage, "hot");
    assert_eq!(config.data_dir, PathBuf::from(".sluice"));
}

#[test]
fn a_sink_named_like_a_transform_is_refused_where_it_is_defined() {
    let text = valid().replace("[sinks.screen]", "[sinks.hot]");
    let errors = errors(&text);
    let (message, hint, at) = only(&errors);
    assert_eq!(message, "a sink and a transform are both called `hot`");
    assert!(hint.unwrap().contains("rename one"));
    assert_eq!(at.0, position_of(&text, "[sinks.hot]").0);
}

#[test]
fn an_unknown_input_names_the_stage_and_suggests_the_closest() {
    let text = valid().replace(r#"inputs = ["hot"]"#, r#"inputs = ["hott"]"#);
    let errors = errors(&text);
    let (message, hint, at) = only(&errors);
    assert_eq!(message, "stage `route` reads from unknown stage `hott`");
    assert_eq!(hint.as_deref(), Some("did you mean `hot`?"));
    assert_eq!(at, position_of(&text, r#""hott""#));
    assert!(
        errors
            .to_string()
            .contains(&format!("--> pipeline.toml:{}:{}\n", at.0, at.1)),
        "{errors}"
    );
}

#[test]
fn a_cycle_is_refused() {
    let text = valid().replace(r#"inputs = ["in"]"#, r#"inputs = ["in", "route"]"#);
    let errors = errors(&text);
    let (message, _, at) = only(&errors);
    assert!(
        message.starts_with("the stages form a cycle: "),
        "{message}"
    );
    assert!(
        message.contains("hot -> route -> hot") || message.contains("route -> hot -> route"),
        "{message}"
    );
    assert!(at.0 > 1);
}

#[test]
fn a_route_nobody_reads_is_refused() {
    let text = valid().replace(r#"routes = ["alerts"]"#, r#"routes = ["alerts", "cold"]"#);
    let (message, hint, at) = only(&errors(&text));
    assert_eq!(message, "no stage reads route `route.cold`");
    assert_eq!(
        hint.as_deref(),
        Some("add `\"route.cold\"` to some stage's `inputs`, or remove the route")
    );
    assert_eq!(at, position_of(&text, r#""cold""#));
}

#[test]
fn an_undeclared_route_is_refused_with_the_known_ones() {
    let text = valid().replace(r#""route.alerts""#, r#""route.alert""#);
    let errors = errors(&text);
    let first = &errors.diagnostics[0];
    assert_eq!(first.message, "stage `route` has no route `alert`");
    assert_eq!(first.hint.as_deref(), Some("did you mean `route.alerts`?"));
}

#[test]
fn a_missing_plugin_file_is_refused_at_its_path() {
    let text = valid().replace(&plugin("router"), "/nowhere/router.wasm");
    let (message, hint, at) = only(&errors(&text));
    assert!(
        message.starts_with("plugin `router`: cannot read /nowhere/router.wasm:"),
        "{message}"
    );
    assert!(hint.unwrap().contains("scripts/build-plugins"));
    assert_eq!(at, position_of(&text, r#""/nowhere/router.wasm""#));
}

#[test]
fn a_plugin_path_that_is_not_a_file_is_refused_not_read_forever() {
    let text = valid().replace(&plugin("router"), "/dev/zero");
    let (message, _, at) = only(&errors(&text));
    assert_eq!(message, "plugin `router`: /dev/zero is not a regular file");
    assert_eq!(at, position_of(&text, r#""/dev/zero""#));
}

#[test]
fn a_pin_mismatch_is_refused_at_the_pin() {
    let pin = "0".repeat(64);
    let text = valid().replace(
        &format!("path = \"{}\"\n", plugin("filter")),
        &format!("path = \"{}\"\nsha256 = \"{pin}\"\n", plugin("filter")),
    );
    let (message, _, at) = only(&errors(&text));
    assert!(
        message.starts_with("plugin `filter`: ") && message.ends_with("not the pinned one"),
        "{message}"
    );
    assert_eq!(at, position_of(&text, &format!("\"{pin}\"")));
}

#[test]
fn an_artifact_pin_needs_an_artifact_and_a_sha256() {
    let filter = format!("path = \"{}\"\n", plugin("filter"));
    let with = |extra: &str| valid().replace(&filter, &format!("{filter}{extra}"));
    let pin = "ab".repeat(32);
    let text = with(&format!(
        "precompiled = \"filter.cwasm\"\nprecompiled_sha256 = \"{pin}\"\n"
    ));
    let config = Config::from_text(Path::new("pipeline.toml"), &text, |_| None).unwrap();
    assert_eq!(
        config.plugins["filter"].precompiled_sha256.as_deref(),
        Some(pin.as_str())
    );

    let text = with(&format!("precompiled_sha256 = \"{pin}\"\n"));
    let (message, _, at) = only(&errors(&text));
    assert!(message.contains("`precompiled` names none"), "{message}");
    assert_eq!(at, position_of(&text, &format!("\"{pin}\"")));

    let text = with("precompiled = \"filter.cwasm\"\nprecompiled_sha256 = \"abc\"\n");
    let (message, _, _) = only(&errors(&text));
    assert!(message.contains("is not a sha256"), "{message}");
}

#[test]
fn a_wrong_type_for_a_key_is_refused_at_the_value() {
    let text = valid().replace(r#"topics = ["sensors/#"]"#, r#"topics = "sensors/#""#);
    let (message, _, at) = only(&errors(&text));
    assert!(
        message.starts_with("stage `in`: invalid type: string \"sensors/#\", expected a sequence"),
        "{message}"
    );
    assert_eq!(at, position_of(&text, r#""sensors/#""#));
}

#[test]
fn an_unknown_key_is_refused_at_the_key() {
    let text = valid().replace("path = \"out\"", "path = \"out\"\nmax_byts = 10");
    let (message, _, at) = only(&errors(&text));
    assert!(
        message.starts_with("stage `files`: unknown field `max_byts`, expected one of"),
        "{message}"
    );
    assert_eq!(at, position_of(&text, "max_byts"));
}

#[test]
fn an_unknown_stage_type_lists_the_known_ones() {
    let text = valid().replace("type = \"console\"", "type = \"consol\"");
    let (message, hint, _) = only(&errors(&text));
    assert_eq!(message, "stage `screen` has unknown type `consol`");
    assert_eq!(hint.as_deref(), Some("did you mean `console`?"));
}

#[test]
fn an_unset_environment_variable_is_refused_at_its_reference() {
    let text = valid().replace("mqtt://127.0.0.1:1883", "mqtt://${BROKER_HOST}:1883");
    let (message, hint, at) = only(&errors(&text));
    assert_eq!(message, "environment variable `BROKER_HOST` is not set");
    assert_eq!(
        hint.as_deref(),
        Some("set BROKER_HOST, or give a default: `${BROKER_HOST:-value}`")
    );
    assert_eq!(at, position_of(&text, "${BROKER_HOST}"));
}

#[test]
fn a_syntax_error_has_a_position() {
    let text = valid().replace("[sinks.files]", "[sinks.files");
    let errors = errors(&text);
    assert_eq!(
        errors.positions()[0].unwrap().0,
        position_of(&text, "[sinks.files").0,
        "{errors}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = valid()
        .replace(r#"inputs = ["hot"]"#, r#"inputs = ["hott"]"#)
        .replace("path = \"out\"", "path = \"out\"\nmax_byts = 10")
        .replace("type = \"console\"", "type = \"consol\"")
        .replace("[sources.in]", "[sources.in]\nbatch = 5");
    let errors = errors(&text);
    let messages: Vec<&str> = errors
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("unknown stage `hott`")),
        "{errors}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("unknown field `max_byts`")),
        "{errors}"
    );
    assert!(
        messages.iter().any(|m| m.contains("unknown type `consol`")),
        "{errors}"
    );
    assert!(
        messages.iter().any(|m| m.contains("unknown field `batch`")),
        "{errors}"
    );
    assert!(errors.to_string().ends_with(&format!(
        "{} problem(s) in pipeline.toml",
        errors.diagnostics.len()
    )));
}

#[test]
fn secrets_interpolate_from_the_environment() {
    let text = valid().replace(
        "[sources.in]",
        "[sources.in]\npassword = \"${TOKEN}\"\nusername = \"u\"",
    );
    let config = Config::from_text(Path::new("pipeline.toml"), &text, |name| {
        (name == "TOKEN").then(|| "t0k".to_owned())
    })
    .unwrap();
    assert_eq!(mqtt_password(&config), Some("t0k"));
}

/// Load `text` with `vars` as the whole environment.
fn load_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::from_text(Path::new("pipeline.toml"), text, |name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| (*v).to_owned())
    })
}

/// The config of a stage, as its kind's struct.
fn kind<T: 'static>(config: &dyn std::any::Any) -> &T {
    config.downcast_ref::<T>().expect("a stage of this kind")
}

fn mqtt_password(config: &Config) -> Option<&str> {
    kind::<MqttSourceConfig>(&*config.sources["in"].config)
        .password
        .as_deref()
}

/// Values no secret should be able to turn into config: each must arrive as exactly
/// these bytes, in one string, and change nothing else.
const HOSTILE: [&str; 8] = [
    "\"\n[plugins.evil]\npath=\"x\"",
    "'''\n\"\"\"",
    "a\"b\\c'd",
    "]\n[sinks.x]\ntype = \"console\"\ninputs = [\"in\"]",
    "${OTHER}",
    "$${TOKEN} ${TOKEN:-x}",
    "\u{1F512} ünïcødé\u{0}\t\r\n",
    "\ngrants = { env = [\"HOME\"], dirs = [{ host = \"/\", guest = \"/\" }] }",
];

#[test]
fn a_hostile_variable_stays_one_string_and_changes_nothing_else() {
    let text = valid().replace(
        "[sources.in]",
        "[sources.in]\npassword = \"${SECRET}\"\nusername = \"u\"",
    );
    let plain = Config::from_text(Path::new("pipeline.toml"), &valid(), |_| None).unwrap();
    for secret in HOSTILE {
        let env = [("SECRET", secret), ("OTHER", "expanded"), ("TOKEN", "t")];
        let config = load_with(&text, &env).unwrap_or_else(|errors| panic!("{secret:?}: {errors}"));
        assert_eq!(mqtt_password(&config), Some(secret));
        assert_eq!(
            config.plugins.keys().collect::<Vec<_>>(),
            ["filter", "router"]
        );
        assert_eq!(config.sinks.keys().collect::<Vec<_>>(), ["files", "screen"]);
        assert_eq!(
            (config.sources.len(), config.transforms.len()),
            (plain.sources.len(), plain.transforms.len())
        );
        for (name, plugin) in &config.plugins {
            assert_eq!(plugin.grants, plain.plugins[name].grants, "{secret:?}");
        }
    }
}

#[test]
fn a_variable_in_a_grant_is_one_entry_of_that_grant() {
    let text = valid().replace(
        &format!("path = \"{}\"\n", plugin("filter")),
        &format!(
            "path = \"{}\"\ngrants = {{ env = [\"${{SITE_VAR}}\"] }}\n",
            plugin("filter")
        ),
    );
    let hostile = "SITE\"], dirs = [{ host = \"/\", guest = \"/\" }], x = [\"";
    let config = load_with(&text, &[("SITE_VAR", hostile)]).unwrap();
    let grants = &config.plugins["filter"].grants;
    assert_eq!(grants.env, [hostile]);
    assert!(grants.dirs.is_empty());
}

#[test]
fn a_variable_naming_two_inputs_is_one_unknown_input() {
    let text = valid().replace(r#"inputs = ["hot"]"#, r#"inputs = ["${UPSTREAM}"]"#);
    let errors = load_with(&text, &[("UPSTREAM", "hot\", \"in")]).unwrap_err();
    let (message, _, at) = only(&errors);
    assert_eq!(
        message,
        "stage `route` reads from unknown stage `hot\", \"in`"
    );
    assert_eq!(at, position_of(&text, "\"${UPSTREAM}\""));
}

#[test]
fn variables_are_substituted_in_every_kind_of_string_but_not_in_keys_or_comments() {
    let text = valid().replace(
        "[sources.in]",
        "[sources.in]\npassword = '''\nline ${TOKEN}'''\nusername = \"${TOKEN}\"",
    );
    let config = load_with(&text, &[("TOKEN", "t0k")]).unwrap();
    assert_eq!(mqtt_password(&config), Some("line t0k"));

    let text = valid().replace("[sinks.files]", "[sinks.\"${TOKEN}\"]");
    let config = load_with(&text, &[("TOKEN", "t0k")]).unwrap();
    assert!(config.sinks.contains_key("${TOKEN}"));

    let text = valid().replace("[sinks.files]", "# needs ${UNSET}\n[sinks.files]");
    load_with(&text, &[]).expect("comments are not interpolated");
}

#[test]
fn unset_variables_are_each_reported_at_their_line_and_column() {
    let text = valid()
        .replace(
            "[sources.in]",
            "[sources.in]\npassword = \"x\\n${A} \\\"${B}\"\nusername = \"u\"",
        )
        .replace("path = \"out\"", "path = \"out/${C}/${A}\"");
    let errors = load_with(&text, &[]).unwrap_err();
    let messages: Vec<&str> = errors
        .diagnostics
        .iter()
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "environment variable `A` is not set",
            "environment variable `B` is not set",
            "environment variable `C` is not set",
            "environment variable `A` is not set",
        ]
    );
    let password_line = position_of(&text, "password").0;
    let path_line = position_of(&text, "path = \"out/").0;
    let (_, c_column) = position_of(&text, "${C}");
    assert_eq!(
        errors.positions(),
        [
            Some((password_line, position_of(&text, "${A}").1)),
            Some((password_line, position_of(&text, "${B}").1)),
            Some((path_line, c_column)),
            Some((path_line, c_column + "${C}/".len())),
        ]
    );
    assert!(
        errors
            .to_string()
            .contains("= help: set A, or give a default: `${A:-value}`"),
        "{errors}"
    );
}

#[test]
fn a_value_whose_variable_is_unset_is_not_also_reported_as_invalid() {
    let text = "[broker]\nlisten = \"127.0.0.1:${PORT}\"\n";
    let (message, _, at) = only(&load_with(text, &[]).unwrap_err());
    assert_eq!(message, "environment variable `PORT` is not set");
    assert_eq!(at, position_of(text, "${PORT}"));
}

#[test]
fn a_variable_outside_a_string_is_a_syntax_error_that_says_to_quote_it() {
    let text = "[broker]\nlisten = \"127.0.0.1:1883\"\nmax_inflight = ${INFLIGHT}\n";
    let errors = load_with(text, &[("INFLIGHT", "10")]).unwrap_err();
    let (_, hint, at) = only(&errors);
    assert_eq!(at, position_of(text, "${INFLIGHT}"), "{errors}");
    assert!(hint.unwrap().contains("only inside quoted strings"));

    let text = "[broker]\nlisten = \"127.0.0.1:${PORT}\"\n";
    let config = load_with(text, &[("PORT", "1884")]).unwrap();
    assert_eq!(config.broker.unwrap().listen.get_ref().port(), 1884);
}

#[test]
fn durations_keep_their_keys_and_units() {
    let text = valid()
        .replace(
            &format!("path = \"{}\"\n", plugin("filter")),
            &format!(
                "path = \"{}\"\nlimits = {{ timeout_ms = 250 }}\n",
                plugin("filter")
            ),
        )
        .replace(
            "topics = [\"sensors/#\"]",
            "topics = [\"sensors/#\"]\nbatch_timeout_ms = 5",
        )
        .replace("path = \"out\"", "path = \"out\"\nmax_age_secs = 60")
        .replace(
            "[sinks.screen]",
            "[sources.ingest]\ntype = \"http\"\nlisten = \"127.0.0.1:0\"\ndelivery_timeout_ms = 1500\n\n[sinks.screen]",
        )
        .replace(
            r#"inputs = ["route.alerts", "hot.dead_letter"]"#,
            r#"inputs = ["route.alerts", "hot.dead_letter", "ingest"]"#,
        );
    let config = load_with(&text, &[]).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(
        config.plugins["filter"].limits.timeout,
        Duration::from_millis(250)
    );
    let mqtt = kind::<MqttSourceConfig>(&*config.sources["in"].config);
    assert_eq!(mqtt.batch_timeout, Duration::from_millis(5));
    let http = kind::<HttpSourceConfig>(&*config.sources["ingest"].config);
    assert_eq!(http.delivery_timeout, Duration::from_millis(1500));
    let file = kind::<FileSinkConfig>(&*config.sinks["files"].config);
    assert_eq!(file.max_age, Duration::from_secs(60));

    let text = valid().replace("path = \"out\"", "path = \"out\"\nmax_age_secs = -1");
    let (message, _, at) = only(&errors(&text));
    assert!(
        message.starts_with("stage `files`: invalid value"),
        "{message}"
    );
    assert_eq!(at, position_of(&text, "-1"));
}

#[test]
fn the_graph_prints_as_dot_and_mermaid() {
    let graph = Config::from_text(Path::new("p.toml"), &valid(), |_| None)
        .unwrap()
        .graph();
    assert!(
        graph
            .to_dot()
            .contains("\"route\" -> \"screen\" [label=\"alerts\"];")
    );
    assert!(graph.to_mermaid().contains("  route -->|alerts| screen"));
}

#[test]
fn kafka_stages_check_their_keys_and_draw_in_the_graph() {
    let kafka = "[sources.in]\ntype = \"kafka\"\nbootstrap_servers = \"127.0.0.1:9092\"\n\
                 group_id = \"g\"\ntopic = [\"t\"]";
    let text = valid().replace(
        "[sources.in]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\ntopics = [\"sensors/#\"]",
        kafka,
    );
    let errors = errors(&text);
    let (message, _, at) = only(&errors);
    assert!(
        message.starts_with("stage `in`: unknown field `topic`, expected one of"),
        "{message}"
    );
    assert!(message.contains("`topics`"), "{message}");
    assert_eq!(at, position_of(&text, "topic = "));

    let text = text.replace("topic = [\"t\"]", "topics = [\"t\"]").replace(
        "[sinks.screen]\ntype = \"console\"",
        "[sinks.screen]\ntype = \"kafka\"\nbootstrap_servers = \"b:9092\"\ntopic = \"alerts-{site}\"",
    );
    let graph = load_with(&text, &[])
        .unwrap_or_else(|e| panic!("{e}"))
        .graph();
    assert!(
        graph.to_mermaid().contains("in([\"in<br/>kafka\"])"),
        "{}",
        graph.to_mermaid()
    );
    assert!(
        graph
            .to_dot()
            .contains("\"screen\" [shape=house, label=\"screen\\n(kafka)\"];")
    );
}

#[cfg(feature = "object-store")]
#[test]
fn a_parquet_object_store_sink_has_a_dead_letter_route_and_a_file_sink_has_none() {
    let text = valid()
        + "\n[sinks.lake]\ntype = \"object_store\"\ninputs = [\"route\"]\nurl = \"memory://\"\n\
           \n[sinks.refused]\ntype = \"file\"\ninputs = [\"lake.dead_letter\"]\npath = \"refused\"\n";
    Config::from_text(Path::new("pipeline.toml"), &text, |_| None).unwrap();

    let text = valid().replace(r#""hot.dead_letter""#, r#""files.dead_letter""#);
    let (message, _, at) = only(&errors(&text));
    assert_eq!(
        message,
        "stage `screen` reads from `files`, which is a sink and has no output"
    );
    assert_eq!(at, position_of(&text, r#""files.dead_letter""#));
}

#[test]
fn a_model_named_from_two_directories_is_declared_as_one_file() {
    // A host's config and a replay job's beside it in a subdirectory name the same
    // file: equal declarations, so the job's pipeline shares the host's live model.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"").unwrap();
    let declared = |config: &str, path: &str| {
        let text = format!("{}\n[models.m]\npath = \"{path}\"\n", valid());
        let config = Config::from_text(&dir.path().join(config), &text, |_| None).unwrap();
        config.models["m"].clone()
    };
    let host = declared("sluice.toml", "m.onnx");
    assert_eq!(host, declared("jobs/rescore.toml", "../m.onnx"));
    assert_eq!(host.path, dir.path().canonicalize().unwrap().join("m.onnx"));
}
