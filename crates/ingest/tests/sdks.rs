//! The official Segment and RudderStack SDKs, unmodified from PyPI and npm, against a real
//! ingest: each sends the calls of `tests/sdk/calls.json` (track, page, screen, identify, group,
//! alias) through its own transport (its batching, gzip or not, the write key as HTTP Basic user
//! or in the body, its `sentAt`), and every call must reach the queues once, intact, with the
//! SDK reporting no error and nothing refused.
//!
//! `scripts/test` installs the SDKs outside the clone (`scripts/lib/sdks.sh`) and exports
//! `SIGHTLINE_SDK_PYTHON` and `SIGHTLINE_SDK_NODE_MODULES`. Without them these tests fail; they
//! never skip.

mod support;

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use sightline_proto::events::v1::{Event, EventType};
use support::TestIngest;

/// The calls every driver sends, and what the assertions expect.
const CALLS: &str = include_str!("sdk/calls.json");

/// How long a driver may take to send, flush and exit.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
enum Runtime {
    Python,
    Node,
}

/// One SDK: its driver script under `tests/sdk/` and the `context.library.name` it sends.
struct Sdk {
    package: &'static str,
    runtime: Runtime,
    driver: &'static str,
    library: &'static str,
}

#[tokio::test]
async fn segment_analytics_python_calls_arrive_intact() {
    check(Sdk {
        package: "segment-analytics-python",
        runtime: Runtime::Python,
        driver: "segment_python.py",
        library: "analytics-python",
    })
    .await;
}

#[tokio::test]
async fn rudder_sdk_python_calls_arrive_intact() {
    check(Sdk {
        package: "rudder-sdk-python",
        runtime: Runtime::Python,
        driver: "rudder_python.py",
        library: "analytics-python",
    })
    .await;
}

#[tokio::test]
async fn segment_analytics_node_calls_arrive_intact() {
    check(Sdk {
        package: "@segment/analytics-node",
        runtime: Runtime::Node,
        driver: "segment_node.mjs",
        library: "@segment/analytics-node",
    })
    .await;
}

#[tokio::test]
async fn rudder_sdk_node_calls_arrive_intact() {
    check(Sdk {
        package: "@rudderstack/rudder-sdk-node",
        runtime: Runtime::Node,
        driver: "rudder_node.mjs",
        library: "analytics-node",
    })
    .await;
}

async fn check(sdk: Sdk) {
    // Fail before starting anything when the SDKs are not installed.
    let command = driver_command(&sdk);
    let ingest = TestIngest::start().await;
    let run = run_driver(command, &ingest, &sdk).await;
    assert!(
        run.success,
        "{}: the driver failed or the SDK reported errors\n{}",
        sdk.package, run.output
    );
    // The driver's summary: the SDK sent every call and reported no error.
    let calls: Vec<Value> = serde_json::from_str(CALLS).expect("calls.json is JSON");
    let summary: Value = run
        .stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{}: no JSON summary\n{}", sdk.package, run.output));
    assert_eq!(summary["sent"], calls.len(), "{}: {summary}", sdk.package);
    assert_eq!(summary["errors"], Value::Array(vec![]), "{}", sdk.package);

    let events: Vec<Event> = ingest
        .drain_group("rollup")
        .await
        .into_iter()
        .flat_map(|(_, batch)| batch.events)
        .collect();
    let refused: Vec<_> = ingest
        .drain_invalid()
        .await
        .into_iter()
        .flat_map(|b| b.events)
        .map(|e| format!("{} {}: {}", e.message_id, e.reason, e.detail))
        .collect();
    assert!(
        refused.is_empty(),
        "{}: ingest refused events: {refused:?}",
        sdk.package
    );
    assert_eq!(
        events.len(),
        calls.len(),
        "{}: every call once, nothing else: {:?}",
        sdk.package,
        events.iter().map(|e| &e.message_id).collect::<Vec<_>>()
    );
    for call in &calls {
        assert_arrived_intact(&sdk, &ingest, call, &events);
    }
    ingest.finish().await;
}

/// Compares the one event published for `call` with what the SDK was asked to send.
fn assert_arrived_intact(sdk: &Sdk, ingest: &TestIngest, call: &Value, events: &[Event]) {
    let id = call["messageId"].as_str().unwrap();
    let what = format!("{} {id}", sdk.package);
    let matching: Vec<&Event> = events.iter().filter(|e| e.message_id == id).collect();
    assert_eq!(matching.len(), 1, "{what}: published once");
    let e = matching[0];
    let text = |field: &str| call[field].as_str().unwrap_or_default().to_string();

    let name = call["type"].as_str().unwrap();
    let kind = ingest::validate::parse_type(name)
        .unwrap_or_else(|| panic!("calls.json: unknown type {name}"));
    assert_eq!(e.r#type(), kind, "{what}: type");
    assert_eq!(
        (e.tenant_id, e.site_id),
        (ingest.tenant_id, ingest.site_id),
        "{what}: the write key's site"
    );
    let name = match kind {
        EventType::Track => text("event"),
        EventType::Page | EventType::Screen => text("name"),
        _ => String::new(),
    };
    assert_eq!(e.name, name, "{what}: event or name");
    assert_eq!(e.user_id, text("userId"), "{what}: userId");
    assert_eq!(e.anonymous_id, text("anonymousId"), "{what}: anonymousId");
    let visitor = [text("anonymousId"), text("userId")]
        .into_iter()
        .find(|v| !v.is_empty())
        .unwrap();
    assert_eq!(e.visitor_id, visitor, "{what}: visitor");
    assert_eq!(e.group_id, text("groupId"), "{what}: groupId");
    assert_eq!(e.previous_id, text("previousId"), "{what}: previousId");

    assert_contains(&what, "properties", &e.properties_json, &call["properties"]);
    assert_contains(&what, "traits", &e.traits_json, &call["traits"]);
    if kind == EventType::Page {
        assert_eq!(
            e.page_url,
            call["properties"]["url"].as_str().unwrap(),
            "{what}: page URL"
        );
    }
    let context: Value = serde_json::from_slice(&e.context_json)
        .unwrap_or_else(|err| panic!("{what}: context is not JSON: {err}"));
    assert_eq!(
        context["library"]["name"], sdk.library,
        "{what}: the SDK's own context"
    );

    // Times: the SDK's `sentAt` was read, and the event time is the one it sent.
    assert!(e.sent_at_us > 0, "{what}: sentAt");
    match call["timestamp"].as_str() {
        Some(ts) => {
            let sent = chrono::DateTime::parse_from_rfc3339(ts).unwrap();
            assert_eq!(
                e.original_timestamp_us,
                sent.timestamp_micros(),
                "{what}: timestamp kept"
            );
        }
        None => {
            let off = (e.original_timestamp_us - e.received_at_us).abs();
            assert!(off < 60_000_000, "{what}: event time {off} µs off");
        }
    }
}

/// Every key of `expected` (an object, or null for none) is in the published JSON object with
/// the same value; SDKs may add keys of their own.
fn assert_contains(what: &str, field: &str, published: &[u8], expected: &Value) {
    let Some(expected) = expected.as_object() else {
        return;
    };
    let published: Value = serde_json::from_slice(published)
        .unwrap_or_else(|err| panic!("{what}: {field} missing or not JSON: {err}"));
    for (key, value) in expected {
        assert_eq!(
            &published[key], value,
            "{what}: {field}.{key} in {published}"
        );
    }
}

/// The command that runs the SDK's driver, or a panic that says how to install the SDKs.
fn driver_command(sdk: &Sdk) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(sdk.driver);
    let mut command = match sdk.runtime {
        Runtime::Python => {
            let python = installed("SIGHTLINE_SDK_PYTHON", "the SDK virtualenv's python");
            let mut c = Command::new(python);
            c.env("PYTHONDONTWRITEBYTECODE", "1");
            c
        }
        Runtime::Node => {
            let modules = installed("SIGHTLINE_SDK_NODE_MODULES", "the SDKs' node_modules");
            assert!(
                modules.join(sdk.package).join("package.json").is_file(),
                "{} is not installed in {}: run scripts/test (it installs the SDKs)",
                sdk.package,
                modules.display()
            );
            let mut c = Command::new("node");
            c.env("SIGHTLINE_SDK_NODE_MODULES", modules);
            c
        }
    };
    command.arg(script);
    command
}

/// A path from the environment that must exist.
fn installed(var: &str, what: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set: it names {what}. Run the tests through scripts/test, which \
             installs the official SDKs and sets it (or, from the repository root, \
             `source scripts/lib/sdks.sh && ensure_sdks` in the shell that runs cargo)"
        )
    });
    assert!(
        path.exists(),
        "{var}={} does not exist: run scripts/test to install the SDKs",
        path.display()
    );
    path
}

struct DriverRun {
    success: bool,
    stdout: String,
    /// Exit status, stdout and stderr, for failure messages.
    output: String,
}

/// Runs the driver against `ingest`, polling so the runtime keeps serving ingest meanwhile;
/// kills it after [`DRIVER_TIMEOUT`].
async fn run_driver(mut command: Command, ingest: &TestIngest, sdk: &Sdk) -> DriverRun {
    let mut child = command
        .arg(&ingest.base)
        .arg(&ingest.key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: cannot start the driver: {e}", sdk.package));
    let stdout = read_in_background(&mut child, true);
    let stderr = read_in_background(&mut child, false);
    let deadline = Instant::now() + DRIVER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the driver can be waited for") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let status_text = match status {
        Some(s) => s.to_string(),
        None => format!("killed after {DRIVER_TIMEOUT:?}"),
    };
    DriverRun {
        success: status.is_some_and(|s| s.success()),
        output: format!("status: {status_text}\nstdout:\n{stdout}\nstderr:\n{stderr}"),
        stdout,
    }
}

/// Reads one of the child's pipes to the end on a thread, so a full pipe never blocks it.
fn read_in_background(child: &mut Child, stdout: bool) -> std::thread::JoinHandle<String> {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}
