//! `sluice test` with the real binary: the quickstart's own tests pass; a copy with a
//! wrong expectation fails with a readable diff and a JUnit report that says so; and
//! `sluice validate --test` runs them after the checks.

mod harness;

use std::path::Path;
use std::process::{Command, Output};

use harness::*;
use quick_xml::XmlVersion;
use quick_xml::events::Event as Xml;

const FILES: [&str; 3] = ["sluice.toml", "gateway.toml", "sluice.test.toml"];
const PLUGINS: [&str; 5] = ["filter", "map", "window", "anomaly", "sensor-sim"];

fn sluice(args: &[&str], config: &Path) -> (Output, String) {
    let output = Command::new(sluice_binary())
        .args(args)
        .arg(config)
        .env("SLUICE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

/// The names of the quickstart's tests, from its test file.
fn test_names(example: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(example.join("sluice.test.toml")).unwrap();
    text.lines()
        .filter_map(|line| line.strip_prefix("name = \""))
        .map(|name| name.trim_end_matches('"').to_owned())
        .collect()
}

#[test]
fn the_quickstart_tests_pass() {
    let (_root, example) = example_copy("quickstart", &FILES, &PLUGINS);
    let (output, stdout) = sluice(&["test"], &example.join("sluice.test.toml"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    let names = test_names(&example);
    assert!(names.len() >= 6, "{names:?}");
    assert!(
        stdout.starts_with(&format!("running {} tests from ", names.len())),
        "{stdout}"
    );
    for name in &names {
        assert!(
            stdout.contains(&format!("test {name} ... ok (")),
            "{name}: {stdout}"
        );
    }
    assert!(
        stdout.ends_with(&format!(
            "test result: ok. {} passed; 0 failed\n",
            names.len()
        )),
        "{stdout}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_and_a_junit_failure() {
    let (root, example) = example_copy("quickstart", &FILES, &PLUGINS);
    let tests = example.join("sluice.test.toml");
    let text = std::fs::read_to_string(&tests).unwrap();
    let right = "temperature_c = 21.5, vibration = 1.2, battery = 80.0, site = \"plant-1\"";
    assert!(text.contains(right), "the shape test's expectation moved");
    std::fs::write(
        &tests,
        text.replace(
            right,
            "temperature_c = 31.0, vibration = 1.2, battery = 80.0",
        ),
    )
    .unwrap();
    let junit = root.path().join("junit.xml");

    let (output, stdout) = sluice(
        &["test", "--junit", junit.to_str().unwrap()],
        &example.join("sluice.toml"),
    );
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("test shape renames the temperature and adds the site ... FAILED\n"),
        "{stdout}"
    );
    let block = "failures:\n\
        ---- shape renames the temperature and adds the site: shape, event 1 of 1 ----\n  \
        expected:  {\"battery\":80.0,\"device_id\":\"d1\",\"seq\":1,\"temperature_c\":31.0,\"ts\":4102444801000,\"vibration\":1.2}\n  \
        actual:    {\"battery\":80.0,\"device_id\":\"d1\",\"seq\":1,\"site\":\"plant-1\",\"temperature_c\":21.5,\"ts\":4102444801000,\"vibration\":1.2}\n  \
        field temperature_c: expected 31.0, got 21.5\n  \
        field site: not expected\n";
    assert!(stdout.contains(block), "{stdout}");
    let passed = test_names(&example).len() - 1;
    assert!(
        stdout.ends_with(&format!("test result: FAILED. {passed} passed; 1 failed\n")),
        "{stdout}"
    );

    // The JUnit report parses, and carries the failure with its diff.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut suites, mut cases, mut failure) = (Vec::new(), 0, None);
    loop {
        match reader.read_event().expect("well-formed XML") {
            Xml::Start(element) | Xml::Empty(element) => {
                let attribute = |name: &str| {
                    element.try_get_attribute(name).unwrap().map(|value| {
                        value
                            .normalized_value(XmlVersion::Explicit1_0)
                            .unwrap()
                            .into_owned()
                    })
                };
                match element.name().as_ref() {
                    b"testsuite" => suites.push((attribute("tests"), attribute("failures"))),
                    b"testcase" => cases += 1,
                    b"failure" => {
                        let body = reader.read_text(element.name()).unwrap();
                        failure = Some((
                            attribute("message"),
                            quick_xml::escape::unescape(&body.decode().unwrap())
                                .unwrap()
                                .into_owned(),
                        ));
                    }
                    _ => {}
                }
            }
            Xml::Eof => break,
            _ => {}
        }
    }
    let total = (passed + 1).to_string();
    assert_eq!(suites, [(Some(total), Some("1".to_owned()))], "{xml}");
    assert_eq!(cases, passed + 1, "{xml}");
    let (message, body) = failure.expect("a <failure>");
    assert_eq!(message.as_deref(), Some("shape, event 1 of 1"));
    assert!(
        body.contains("field temperature_c: expected 31.0, got 21.5"),
        "{body}"
    );
}

#[test]
fn validate_with_test_runs_the_tests_after_the_checks() {
    let (_root, example) = example_copy("quickstart", &FILES, &PLUGINS);
    let config = example.join("sluice.toml");
    let (output, stdout) = sluice(&["validate", "--test"], &config);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let checked = stdout.find(": ok (").expect("the validation's line");
    let ran = stdout.find("test result: ok.").expect("the tests' result");
    assert!(checked < ran, "{stdout}");

    // A test naming a stage the config does not have: an invalid test file, exit 2.
    let tests = example.join("sluice.test.toml");
    let text = std::fs::read_to_string(&tests).unwrap();
    std::fs::write(
        &tests,
        text.replacen("extract_from = \"valid\"", "extract_from = \"vallid\"", 1),
    )
    .unwrap();
    let (output, stdout) = sluice(&["validate", "--test"], &config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("error: unknown stage `vallid`"), "{stderr}");
    assert!(
        stderr.contains("sluice.test.toml:"),
        "the place is named: {stderr}"
    );
    assert!(stderr.contains("did you mean `valid`?"), "{stderr}");
}
