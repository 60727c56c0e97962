//! `shoal serve` end to end: the real binary on a loopback port, spoken to over real
//! TCP (HTTP/1.0, so a body ends when the server closes), over finished and live
//! runs on both store backends: the API's answers against the store's own reports,
//! every action's effect on a live run, the live event stream, bad requests, the
//! token, the action header, read-only mode and the metrics, parsed.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};

use common::{wait_for, Env, HANG};
use serde_json::{json, Value};

/// A `shoal serve` in the background, stopped (SIGTERM, then waited) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(env: &Env, extra: &[&str]) -> Server {
        Server::start_with(env, extra, &[])
    }

    fn start_with(env: &Env, extra: &[&str], vars: &[(&str, &str)]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut cmd = env.command(&args);
        cmd.env_remove("SHOAL_TOKEN").envs(vars.iter().copied());
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("shoal serve: listening on http://127.0.0.1:")
            .and_then(|rest| rest.strip_suffix('/'))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .unwrap();
        Server { child, port }
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], "")
    }

    /// A POST with the action header.
    fn act(&self, path: &str, body: &str) -> Reply {
        self.request("POST", path, &[("X-Shoal-Request", "1")], body)
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut stream = self.connect(method, path, headers, body);
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{raw:?}"));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
            .unwrap_or_default();
        Reply { status, content_type, body: body.to_owned() }
    }

    fn connect(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(HANG)).unwrap();
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\n");
        for (name, value) in headers {
            request += &format!("{name}: {value}\r\n");
        }
        request += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).unwrap();
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: a plain system call on our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    #[track_caller]
    fn json(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:#?}");
        assert!(self.content_type.starts_with("application/json"), "{self:#?}");
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }

    /// A JSON error with `status` whose message holds `words`.
    #[track_caller]
    fn error(&self, status: u16, words: &str) {
        let error = self.json(status)["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(words), "{error:?} does not say {words:?}");
    }
}

/// Tasks 1..=10 of `sh -c`: multiples of 3 fail with exit 3 and `bad input N` on
/// stderr; the others print `ok N`.
fn finished_run(env: &Env) {
    let script = env.write(
        "task.sh",
        "if [ $(( $1 % 3 )) -eq 0 ]; then echo bad input $1 >&2; exit 3; fi; echo ok $1\n",
    );
    let inputs: Vec<String> = (1..=10).map(|n| n.to_string()).collect();
    let mut args = vec!["run", "-j", "2", "sh", &script, ":::"];
    args.extend(inputs.iter().map(String::as_str));
    env.run(&args).expect_code(1);
}

fn tasks_of(page: &Value) -> Vec<u64> {
    page["tasks"].as_array().unwrap().iter().map(|t| t["task"].as_u64().unwrap()).collect()
}

both_stores!(the_api_answers_what_the_store_holds, actions_steer_a_live_run_as_the_cli_commands_do,);

fn the_api_answers_what_the_store_holds(env: Env) {
    finished_run(&env);
    let server = Server::start(&env, &[]);

    let runs = server.get("/api/v1/runs").json(200);
    assert_eq!(runs["total"], 1);
    assert_eq!(runs["runs"][0]["status"], "finished");
    assert_eq!(server.get("/api/v1/runs?status=running").json(200)["runs"], json!([]));

    let run = server.get("/api/v1/runs/1").json(200);
    assert_eq!((run["total"].as_u64(), run["done"].as_u64()), (Some(10), Some(10)));
    assert_eq!((run["failed"].as_u64(), run["slots"].as_u64()), (Some(3), Some(2)));
    assert_eq!(run["counts"]["failed"], 3);
    assert!(run["rate"].as_f64().unwrap() > 0.0);
    assert_eq!(run["eta_seconds"], Value::Null);
    let busy: f64 =
        run["per_slot"].as_array().unwrap().iter().map(|s| s["busy"].as_f64().unwrap()).sum();
    assert!(busy > 0.0, "{run}");

    // The same statistics as `shoal stats --json`.
    assert_eq!(server.get("/api/v1/runs/1/stats").json(200), env.stats(&["--run", "1"]));

    let failed = server.get("/api/v1/runs/1/tasks?status=failed").json(200);
    assert_eq!(tasks_of(&failed), [3, 6, 9]);
    assert_eq!(failed["tasks"][0]["message"], "bad input 3");
    assert!(failed["tasks"][0].get("stdout").is_none(), "a row carries no output");
    // Keyset pages.
    let first = server.get("/api/v1/runs/1/tasks?status=failed,succeeded&limit=4").json(200);
    assert_eq!((tasks_of(&first), first["next_after"].as_u64()), (vec![1, 2, 3, 4], Some(4)));
    let next =
        server.get("/api/v1/runs/1/tasks?status=failed&status=succeeded&after=4&limit=8").json(200);
    assert_eq!((tasks_of(&next), &next["next_after"]), (vec![5, 6, 7, 8, 9, 10], &Value::Null));
    assert_eq!(tasks_of(&server.get("/api/v1/runs/1/tasks?offset=8").json(200)), [9, 10]);
    assert_eq!(tasks_of(&server.get("/api/v1/runs/1/tasks?exit_code=3").json(200)), [3, 6, 9]);
    let failed_on_slot_1: Vec<u64> = env
        .results(&[])
        .iter()
        .filter(|t| t["slot"] == 1 && t["exit_code"] == 3)
        .map(|t| t["task"].as_u64().unwrap())
        .collect();
    let page = server.get("/api/v1/runs/1/tasks?exit_code=3&slot=1").json(200);
    assert_eq!(tasks_of(&page), failed_on_slot_1);
    assert_eq!(tasks_of(&server.get("/api/v1/runs/1/tasks?q=%2010").json(200)), [10]);

    let task = server.get("/api/v1/runs/1/tasks/6").json(200);
    assert_eq!(task["task"]["status"], "failed");
    assert_eq!(task["attempts"][0]["stderr"], "bad input 6\n");
    assert_eq!(task["attempts"][0]["exit_code"], 3);
    assert_eq!(server.get("/api/v1/runs/1/tasks/5").json(200)["attempts"][0]["stdout"], "ok 5\n");

    let failures = server.get("/api/v1/runs/1/failures").json(200);
    let groups: Vec<(String, Vec<u64>)> = failures["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let tasks =
                g["tasks"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
            (g["signature"]["message"].as_str().unwrap().to_owned(), tasks)
        })
        .collect();
    assert_eq!(
        groups,
        [
            ("bad input 3".to_owned(), vec![3]),
            ("bad input 6".into(), vec![6]),
            ("bad input 9".into(), vec![9])
        ]
    );
}

fn actions_steer_a_live_run_as_the_cli_commands_do(env: Env) {
    finished_run(&env); // the store exists before the server starts
    let server = Server::start(&env, &[]);
    let live = env.spawn(&["run", "-j", "2", "sleep", ":::", "30", "30", "30", "30"]);
    wait_for("the live run's two slots", HANG, || {
        let run = server.get("/api/v1/runs/2");
        (run.status == 200 && run.json(200)["counts"]["running"] == 2).then_some(())
    });
    let result =
        |reply: Reply| reply.json(200)["requests"][0]["result"].as_str().unwrap().to_owned();

    assert_eq!(result(server.act("/api/v1/runs/2/slots", r#"{"slots": 1}"#)), "slots 2 -> 1");
    assert_eq!(server.get("/api/v1/runs/2").json(200)["slots"], 1);
    let metrics = server.get("/metrics").body;
    assert!(metrics.contains("\nshoal_slots 1\n"), "{metrics}");
    assert!(metrics.contains("\nshoal_runs{status=\"running\"} 1\n"), "{metrics}");
    assert!(result(server.act("/api/v1/runs/2/pause", "")).starts_with("paused"));
    assert_eq!(result(server.act("/api/v1/runs/2/unpause", "")), "unpaused");
    let cancelled = server.act("/api/v1/runs/2/cancel", r#"{"tasks": [4]}"#).json(200);
    let request = &cancelled["requests"][0];
    assert_eq!((&request["action"], &request["task"]), (&json!("cancel_task"), &json!(4)));
    wait_for("task 4 cancelled", HANG, || {
        (server.get("/api/v1/runs/2/tasks/4").json(200)["task"]["status"] == "cancelled")
            .then_some(())
    });
    // A task that has ended cannot be cancelled again: a conflict, named.
    server
        .act("/api/v1/runs/2/cancel", r#"{"tasks": [4]}"#)
        .error(409, "task 4 of run 2 has ended");
    server.act("/api/v1/runs/2/slots", r#"{"slots": 0}"#).error(400, "slots");

    server.act("/api/v1/runs/2/cancel", "").json(200);
    live.wait(HANG).expect_code(130);
    assert_eq!(server.get("/api/v1/runs/2").json(200)["status"], "interrupted");
    server.act("/api/v1/runs/2/pause", "").error(409, "has ended");
}

#[test]
fn the_event_stream_follows_a_live_run_to_its_end() {
    let env = Env::new();
    finished_run(&env);
    let server = Server::start(&env, &[]);
    let gate = env.file("go");
    let script = env
        .write("gated.sh", &format!("while [ ! -e {gate} ]; do sleep 0.02; done; [ $1 != 2 ]\n"));
    let live = env.spawn(&["run", "-j", "2", "sh", &script, ":::", "1", "2", "3"]);
    wait_for("the live run", HANG, || (server.get("/api/v1/runs/2").status == 200).then_some(()));

    let stream = server.connect("GET", "/api/v1/runs/2/events", &[], "");
    let mut lines = BufReader::new(stream).lines().map_while(Result::ok);
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut name = String::new();
    for line in lines.by_ref() {
        if let Some(event) = line.strip_prefix("event: ") {
            name = event.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(data).unwrap()));
            if name == "progress" && events.len() == 1 {
                std::fs::write(&gate, "").unwrap(); // seen live: let the tasks end
            }
            if name == "end" {
                break;
            }
        }
    }
    live.wait(HANG).expect_code(1);
    let (first, last) = (&events[0], events.last().unwrap());
    assert_eq!(first.0, "progress");
    assert_eq!(first.1["total"], 3);
    assert_eq!(last, &("end".to_owned(), json!({"run": 2, "status": "finished"})));
    let mut ended: Vec<(u64, String)> = events
        .iter()
        .filter(|(name, _)| name == "task")
        .map(|(_, e)| (e["task"].as_u64().unwrap(), e["status"].as_str().unwrap().to_owned()))
        .collect();
    ended.sort();
    assert_eq!(ended, [(1, "succeeded".into()), (2, "failed".into()), (3, "succeeded".into())]);
    let progress: Vec<u64> = events
        .iter()
        .filter(|(n, _)| n == "progress")
        .map(|(_, e)| e["counts"]["succeeded"].as_u64().unwrap())
        .collect();
    assert_eq!(progress.first(), Some(&0), "it began before any task ended");
}

#[test]
fn bad_requests_get_clear_json_errors_never_a_5xx() {
    let env = Env::new();
    finished_run(&env);
    let server = Server::start(&env, &[]);
    server.get("/api/v1/runs/7").error(404, "no run 7");
    server.get("/api/v1/runs/7/tasks").error(404, "no run 7");
    server.get("/api/v1/runs/7/events").error(404, "no run 7");
    server.get("/api/v1/runs/1/tasks/99").error(404, "99");
    server.get("/api/v1/runs/x").error(400, "x");
    server.get("/api/v1/runs/1/tasks?status=lost").error(400, "status=\"lost\"");
    server.get("/api/v1/runs?status=lost").error(400, "status=\"lost\"");
    server.get("/api/v1/runs/1/tasks?limit=100000").error(400, "limit=100000");
    server.get("/api/v1/runs/1/tasks?limit=0").error(400, "limit=0");
    server.get("/api/v1/runs/1/tasks?slot=-1").error(400, "slot");
    server.get("/api/v1/runs/1/tasks?after=2&offset=3").error(400, "not both");
    server.get("/api/v1/runs/1/tasks?colour=red").error(400, "unknown parameter \"colour\"");
    server.get("/api/v1/nothing").error(404, "no such route");
    server.request("DELETE", "/api/v1/runs/1", &[], "").json(405);
    server.act("/api/v1/runs/1/cancel", "{not json").error(400, "bad JSON body");
    server.act("/api/v1/runs/1/cancel", r#"{"tasks": "all"}"#).error(400, "bad JSON body");
    server.act("/api/v1/runs/1/slots", "").error(400, "slots");
    server.act("/api/v1/runs/1/pause", "").error(409, "has ended");
    server.act("/api/v1/runs/7/pause", "").error(404, "no run 7");
    let doc = server.get("/api/v1/openapi.json").json(200);
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(include_str!("../../../docs/openapi.json")).unwrap()
    );
}

#[test]
fn a_token_guards_every_request_but_the_dashboards_assets() {
    let env = Env::new();
    finished_run(&env);
    // Any address but loopback needs a token.
    let out = env.run(&["serve", "--listen", "0.0.0.0:0"]);
    out.expect_code(2);
    assert!(out.stderr.contains("needs a token"), "{}", out.stderr);
    let empty = env.write("empty", "\n");
    let out = env.run(&["serve", "--token-file", &empty]);
    out.expect_code(2);
    assert!(out.stderr.contains("it is empty"), "{}", out.stderr);

    let token = env.write("token", "s3cret\n");
    let server = Server::start(&env, &["--token-file", &token]);
    server.get("/api/v1/runs").error(401, "token");
    server.get("/metrics").error(401, "token");
    server
        .request("GET", "/api/v1/runs", &[("Authorization", "Bearer wrong")], "")
        .error(401, "token");
    let runs = server.request("GET", "/api/v1/runs", &[("Authorization", "Bearer s3cret")], "");
    assert_eq!(runs.json(200)["total"], 1);
    let page = server.get("/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>shoal</title>"), "{page:?}");
    drop(server);

    // SHOAL_TOKEN gives it too, and lets another address be served.
    let server = Server::start_with(&env, &[], &[("SHOAL_TOKEN", "t0k")]);
    server.get("/api/v1/runs").error(401, "token");
    server.request("GET", "/api/v1/runs", &[("Authorization", "Bearer t0k")], "").json(200);
}

#[test]
fn actions_need_their_header_and_read_only_serves_none() {
    let env = Env::new();
    finished_run(&env);
    let server = Server::start(&env, &[]);
    server.request("POST", "/api/v1/runs/1/pause", &[], "").error(403, "X-Shoal-Request: 1");
    server
        .request("POST", "/api/v1/runs/1/pause", &[("X-Shoal-Request", "yes")], "")
        .error(403, "X-Shoal-Request");
    drop(server);

    let server = Server::start(&env, &["--read-only"]);
    server.act("/api/v1/runs/1/cancel", "").error(403, "read-only");
    server.act("/api/v1/runs/1/slots", r#"{"slots": 3}"#).error(403, "read-only");
    assert_eq!(server.get("/api/v1/runs/1").json(200)["id"], 1);
    // Serving never creates a store.
    let missing = Env::new();
    let out = missing.run(&["serve"]);
    out.expect_code(2);
    assert!(out.stderr.contains("no store at"), "{}", out.stderr);
    assert!(!missing.store.exists());
}

/// A sample of the Prometheus text format: its name, labels and value.
type Samples = BTreeMap<String, f64>;

/// Parses the text format strictly enough to catch a malformed line: `# HELP` and
/// `# TYPE` before each family's samples, `name{label="value",...} number`.
fn parse_metrics(text: &str) -> (Samples, BTreeMap<String, String>) {
    let (mut samples, mut types) = (Samples::new(), BTreeMap::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name.starts_with("shoal_"), "{line:?}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line:?}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap();
                for pair in inner.split(',') {
                    let (key, value) = pair.split_once('=').unwrap();
                    assert!(key != "task" && key != "args" && key != "run", "{line:?}");
                    assert!(value.starts_with('"') && value.ends_with('"'), "{line:?}");
                }
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        let kind = types.get(family).unwrap_or_else(|| panic!("no TYPE before {line:?}"));
        assert_eq!(kind == "counter", name.ends_with("_total"), "{line:?}");
        samples.insert(series.to_owned(), value.parse().unwrap_or_else(|_| panic!("{line:?}")));
    }
    (samples, types)
}

#[test]
fn metrics_count_a_known_run_in_prometheus_text_format() {
    let env = Env::new();
    finished_run(&env);
    let server = Server::start(&env, &[]);
    let reply = server.get("/metrics");
    assert_eq!(reply.status, 200);
    assert!(reply.content_type.starts_with("text/plain; version=0.0.4"), "{reply:?}");
    let (samples, types) = parse_metrics(&reply.body);
    let value = |series: &str| *samples.get(series).unwrap_or_else(|| panic!("no {series}"));
    assert_eq!(value("shoal_tasks{status=\"succeeded\"}"), 7.0);
    assert_eq!(value("shoal_tasks{status=\"failed\"}"), 3.0);
    assert_eq!(value("shoal_tasks{status=\"queued\"}"), 0.0);
    assert_eq!((value("shoal_tasks_queued"), value("shoal_tasks_running")), (0.0, 0.0));
    assert_eq!(value("shoal_attempts_total{outcome=\"succeeded\"}"), 7.0);
    assert_eq!(value("shoal_attempts_total{outcome=\"failed\"}"), 3.0);
    assert_eq!(value("shoal_runs{status=\"finished\"}"), 1.0);
    assert_eq!((value("shoal_slots"), value("shoal_slots_busy")), (0.0, 0.0));
    assert_eq!(types["shoal_task_duration_seconds"], "histogram");
    assert_eq!(value("shoal_task_duration_seconds_count"), 10.0);
    assert_eq!(value("shoal_task_duration_seconds_bucket{le=\"+Inf\"}"), 10.0);
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(s, _)| s.starts_with("shoal_task_duration_seconds_bucket"))
        .map(|(_, v)| *v)
        .collect();
    assert!(buckets.len() > 10);
    assert!(buckets.iter().all(|&b| b <= 10.0));
    // The durations the store holds, summed, within rounding.
    let stored: f64 = env.results(&[]).iter().map(|t| t["duration"].as_f64().unwrap()).sum();
    assert!((value("shoal_task_duration_seconds_sum") - stored).abs() < 1e-6);
}

/// The repository's root, where `tests/browser` lives.
fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_dashboard_in_a_browser_follows_a_live_run_and_filters_its_failures() {
    // The test command (scripts/test.sh) installs chromium, node and playwright-core.
    let script = repo_root().join("tests/browser/dashboard.mjs");
    let installed = repo_root().join("tests/browser/node_modules/playwright-core");
    assert!(
        installed.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the browser test needs chromium and playwright-core: scripts/test.sh installs them"
    );
    let env = Env::new();
    finished_run(&env);
    let server = Server::start(&env, &[]);
    let gate = env.file("go");
    let gated = env.write(
        "gated.sh",
        &format!(
            "while [ ! -e {gate} ]; do sleep 0.02; done\n\
             if [ $1 = 3 ]; then echo bad thing >&2; exit 5; fi\n"
        ),
    );
    let live = env.spawn(&["run", "-j", "2", "sh", &gated, ":::", "1", "2", "3", "4"]);
    wait_for("the live run", HANG, || (server.get("/api/v1/runs/2").status == 200).then_some(()));
    let shots = repo_root().join("target/dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = std::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://127.0.0.1:{}/", server.port))
        .args(["2", &gate])
        .arg(&shots)
        .output()
        .expect("run node");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("-> finished; failures filtered to task 3"), "{stdout}");
    live.wait(HANG).expect_code(1);
}
