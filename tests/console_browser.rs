//! The web console in a real browser: Debian's headless Chromium driven over `WebDriver` against
//! `custody demo` (the real gateway, the development OIDC issuer, kube-sim) and real kubectl.
//!
//! People log in through the issuer's account page; alice sees her sessions, bob (an auditor)
//! everyone's; the player shows the screen custody's own emulator computes at the same moment;
//! search jumps to a hit; a download verifies with `custody verify`; an access request is
//! asked for and approved in the browser, and the exec it allows works; bob watches alice's
//! live session while she types. Every page is photographed at desktop and phone width (the
//! folder is printed), and the browser's log must hold no Content Security Policy violation.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "test code: a failed step should fail the test loudly"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use custody_fixtures::browser::{self, Browser, BrowserOptions, DESKTOP, PHONE};
use custody_fixtures::harness::{Collected, Kubectl, kubectl_binary};
use fantoccini::Locator;
use serde_json::json;

#[path = "support/demo.rs"]
mod support;

use support::Demo;

const WAIT: Duration = Duration::from_secs(20);

fn kubectl(demo: &Demo) -> Kubectl {
    let home = demo.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    Kubectl::new(
        kubectl_binary("1.32").unwrap(),
        demo.dir.path().join("demo/kubeconfig"),
        home,
    )
}

fn base(demo: &Demo) -> String {
    demo.printed[0].trim_start_matches("ready ").to_owned()
}

/// `kubectl exec -it` on a pseudo-terminal, typed into like a person does.
struct Terminal {
    pty: pty_process::blocking::Pty,
    child: Child,
    screen: Collected,
}

impl Terminal {
    /// Starts `kubectl --context <who> exec -it <pod> -- sh` and waits for the prompt.
    fn start(k: &Kubectl, who: &str, extra: &[&str]) -> Terminal {
        let (pty, pts) = pty_process::blocking::open().unwrap();
        pty.resize(pty_process::Size::new(24, 80)).unwrap();
        let mut args = vec!["--context", who, "exec", "-it"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "sh"]);
        let cmd = k.command(&args);
        let mut pcmd = pty_process::blocking::Command::new(cmd.get_program()).args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            if let Some(value) = value {
                pcmd = pcmd.env(key, value);
            }
        }
        let child = pcmd.env("TERM", "xterm").spawn(pts).unwrap();
        let read_side =
            std::fs::File::from(std::os::fd::AsFd::as_fd(&pty).try_clone_to_owned().unwrap());
        let screen = Collected::spawn(read_side);
        let deadline = Instant::now() + WAIT;
        while !(screen.text().contains("# ") || screen.text().contains("$ ")) {
            assert!(Instant::now() < deadline, "no prompt: {}", screen.text());
            std::thread::sleep(Duration::from_millis(25));
        }
        Terminal { pty, child, screen }
    }

    /// Types `line` and Enter, and waits for `expect` on the screen.
    fn line(&mut self, line: &str, expect: &str) {
        self.pty.write_all(line.as_bytes()).unwrap();
        self.pty.write_all(b"\r").unwrap();
        self.screen.wait_for(expect, WAIT).unwrap();
    }

    /// Ends the shell (Ctrl-D) and waits for kubectl to exit.
    fn end(mut self) {
        self.pty.write_all(&[0x04]).unwrap();
        let deadline = Instant::now() + WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "kubectl exec -it did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Logs `who` in through the console and the issuer's account page; lands on the sessions.
async fn log_in(browser: &Browser, base: &str, who: &str, shots: &Path) {
    let c = browser.client();
    c.goto(&format!("{base}/custody/ui/")).await.unwrap();
    // Not logged in: the console sends the browser to the issuer, whose page lists the users.
    let link = browser
        .wait_for(&format!("a.user[href*=\"login_hint={who}\"]"), WAIT)
        .await
        .unwrap();
    if who == "alice" {
        browser.screenshot(shots, "login-desktop").await.unwrap();
    }
    link.click().await.unwrap();
    browser.wait_for("header.top .user", WAIT).await.unwrap();
    assert_eq!(
        browser.text_of("header.top .user").await.unwrap(),
        format!("oidc:{who}")
    );
    let url = c.current_url().await.unwrap();
    assert_eq!(url.path(), "/custody/ui/sessions", "{url}");
}

/// Both widths of the current page.
async fn photograph(browser: &Browser, shots: &Path, name: &str) {
    browser
        .screenshot(shots, &format!("{name}-desktop"))
        .await
        .unwrap();
    browser.set_viewport(PHONE.0, PHONE.1).await.unwrap();
    browser
        .screenshot(shots, &format!("{name}-phone"))
        .await
        .unwrap();
    browser.set_viewport(DESKTOP.0, DESKTOP.1).await.unwrap();
}

/// The session ids listed on the current sessions page.
async fn listed_ids(browser: &Browser) -> Vec<String> {
    let mut ids = Vec::new();
    for link in browser
        .client()
        .find_all(Locator::Css("table.sessions td:first-child a"))
        .await
        .unwrap()
    {
        let href = link.attr("href").await.unwrap().unwrap_or_default();
        let id = href
            .trim_start_matches("/custody/ui/sessions/")
            .split('?')
            .next()
            .unwrap()
            .to_owned();
        ids.push(id);
    }
    ids
}

/// Reloads the sessions page until `count` sessions are listed as ended.
async fn wait_for_sealed(browser: &Browser, base: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        browser
            .client()
            .goto(&format!("{base}/custody/ui/sessions"))
            .await
            .unwrap();
        let ended = browser
            .client()
            .find_all(Locator::Css("table.sessions .status.complete"))
            .await
            .unwrap()
            .len();
        if ended >= count {
            return listed_ids(browser).await;
        }
        assert!(
            Instant::now() < deadline,
            "{count} sealed sessions never listed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The player's screen, row by row, right-trimmed, without trailing empty rows.
async fn player_screen(browser: &Browser) -> Vec<String> {
    let value = browser
        .client()
        .execute(
            "return [...document.querySelectorAll('pre.ap-term-text > span.ap-line')].map(l => l.textContent);",
            vec![],
        )
        .await
        .unwrap();
    trimmed(
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap_or_default().to_owned()),
    )
}

fn trimmed(lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut lines: Vec<String> = lines.map(|l| l.trim_end().to_owned()).collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

/// custody's own emulator's screen at `at_us` of the recording in `file`.
fn custody_screen(file: &Path, at_us: u64) -> Vec<String> {
    let recording = custody_recorder::reader::read_recording(file, None).unwrap();
    let timeline = custody_replay::Timeline::from_recording(&recording, None).unwrap();
    trimmed(timeline.terminal_at(at_us).unwrap().lines().into_iter())
}

/// The time (µs) of the first output event holding `needle`.
fn output_time(file: &Path, needle: &str) -> u64 {
    let recording = custody_recorder::reader::read_recording(file, None).unwrap();
    recording
        .events
        .iter()
        .find(|e| match &e.kind {
            custody_recorder::model::EventKind::Output(bytes) => {
                String::from_utf8_lossy(bytes).contains(needle)
            }
            _ => false,
        })
        .map_or_else(|| panic!("no output {needle:?}"), |e| e.time_us)
}

fn recording_file(demo: &Demo, id: &str) -> PathBuf {
    let dir = demo.dir.path().join("demo/data/recordings");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(id))
        .unwrap_or_else(|| panic!("no recording of {id} in {}", dir.display()))
}

async fn no_csp_violations(browser: &Browser) {
    let violations = browser.csp_violations().await.unwrap();
    assert!(violations.is_empty(), "CSP violations: {violations:#?}");
    let severe: Vec<_> = browser
        .browser_log()
        .await
        .unwrap()
        .into_iter()
        // A page answered 404 on purpose is a "network" error; a script's failure is not.
        .filter(|e| e.level == "SEVERE" && e.source != "network")
        .collect();
    assert!(severe.is_empty(), "script errors: {severe:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn people_investigate_replay_approve_and_watch_in_the_browser() {
    let demo = support::start_demo(&[], Duration::from_secs(60));
    let base = base(&demo);
    let k = kubectl(&demo);
    let shots = browser::screenshot_dir("console");

    // A terminal session of alice's, and a session of bob's without a terminal.
    let mut term = tokio::task::block_in_place(|| Terminal::start(&k, "alice", &["demo"]));
    tokio::task::block_in_place(|| {
        term.line("echo custody-$((6*7))", "custody-42");
        std::thread::sleep(Duration::from_millis(1500));
        term.line("printf 'row-%s\\n' 1 2 3", "row-3");
        std::thread::sleep(Duration::from_millis(500));
        term.end();
        let out = k
            .run([
                "--context",
                "bob",
                "exec",
                "demo",
                "--",
                "sh",
                "-c",
                "echo bob-out; echo bob-err >&2",
            ])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });

    // alice sees her session and not bob's.
    let alice = Browser::start(BrowserOptions::desktop()).await.unwrap();
    log_in(&alice, &base, "alice", &shots).await;
    let alice_ids = wait_for_sealed(&alice, &base, 1).await;
    assert_eq!(alice_ids.len(), 1, "alice sees only her own: {alice_ids:?}");
    let tty_id = alice_ids[0].clone();
    photograph(&alice, &shots, "sessions").await;

    // bob, an auditor, sees both.
    let bob = Browser::start(BrowserOptions::desktop()).await.unwrap();
    log_in(&bob, &base, "bob", &shots).await;
    let bob_ids = wait_for_sealed(&bob, &base, 2).await;
    assert_eq!(bob_ids.len(), 2, "{bob_ids:?}");
    assert!(bob_ids.contains(&tty_id));
    let bob_id = bob_ids.iter().find(|id| **id != tty_id).unwrap().clone();

    // Search across recordings: the list shows where the words occur, and the hit opens the
    // session at that moment.
    alice
        .client()
        .goto(&format!("{base}/custody/ui/sessions?grep=row-2"))
        .await
        .unwrap();
    let found = alice.wait_for("tr.hit a", WAIT).await.unwrap();
    // The first hit may be the typed line (`printf 'row-%s\n' 1 2 3`) or the output.
    let text = found.text().await.unwrap();
    assert!(text.contains("row"), "{text}");
    // The index finds words (`row-2` is `row` and `2`): the matched ones are marked.
    let marked = alice.text_of("tr.hit mark").await.unwrap();
    assert!(["row", "2", "row-2"].contains(&marked.as_str()), "{marked}");
    photograph(&alice, &shots, "search").await;

    // alice cannot open bob's session: the same 404 as a session that does not exist.
    alice
        .client()
        .goto(&format!("{base}/custody/ui/sessions/{bob_id}"))
        .await
        .unwrap();
    assert_eq!(alice.text_of("h1").await.unwrap(), "No such session");

    // The player shows custody's own screen at a moment (a deep link with ?t=).
    let file = recording_file(&demo, &tty_id);
    let at_us = output_time(&file, "custody-42") + 700_000;
    let expected = custody_screen(&file, at_us);
    assert!(expected.iter().any(|l| l == "custody-42"), "{expected:?}");
    assert!(!expected.iter().any(|l| l == "row-3"), "{expected:?}");
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds of a short test session"
    )]
    let at_secs = at_us as f64 / 1e6;
    alice
        .client()
        .goto(&format!(
            "{base}/custody/ui/sessions/{tty_id}?t={at_secs:.3}"
        ))
        .await
        .unwrap();
    alice.wait_for("pre.ap-term-text", WAIT).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let shown = player_screen(&alice).await;
        if shown == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the player shows\n{shown:#?}\ncustody's emulator at {at_us} µs shows\n{expected:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        alice.text_of("#verdict").await.unwrap(),
        "intact",
        "the page shows the integrity verdict"
    );
    let commands = alice.text_of("ol.timeline").await.unwrap();
    assert!(commands.contains("echo custody-$((6*7))"), "{commands}");
    photograph(&alice, &shots, "session-tty").await;

    // With idle time skipped (the 1.5 s pause plays as 1 s), seeking in recording time still
    // lands on the same screen as custody's emulator a moment later.
    alice
        .client()
        .find(Locator::Css("#skip-idle"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let later_us = output_time(&file, "row-3") + 300_000;
    let expected_later = custody_screen(&file, later_us);
    #[allow(
        clippy::cast_precision_loss,
        reason = "seconds of a short test session"
    )]
    let later = later_us as f64 / 1e6;
    alice
        .client()
        .execute(
            "return window.custodyPlayer.seek(arguments[0]);",
            vec![json!(later)],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while player_screen(&alice).await != expected_later {
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            player_screen(&alice).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Search inside the recording, then jump to the hit.
    let search = alice
        .wait_for("form.search-in input[name=q]", WAIT)
        .await
        .unwrap();
    search.send_keys("row-2").await.unwrap();
    alice
        .client()
        .find(Locator::Css("form.search-in button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let hit = alice.wait_for("ol.hits a", WAIT).await.unwrap();
    let hit_at: f64 = hit
        .attr("data-seek")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    hit.click().await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let position = alice
            .client()
            .execute("return window.custodyPlayer.position();", vec![])
            .await
            .unwrap()
            .as_f64()
            .unwrap_or(-1.0);
        let url = alice.client().current_url().await.unwrap();
        if (position - hit_at).abs() < 0.05 && url.query().unwrap_or_default().contains("t=") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "position {position}, hit {hit_at}, {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Drawing waits for the next animation frame.
    let deadline = Instant::now() + WAIT;
    while !player_screen(&alice).await.iter().any(|l| l == "row-2") {
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            player_screen(&alice).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The signed recording and the key, downloaded from the page, verify with custody verify.
    let downloads = demo.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    alice
        .cdp(
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": downloads.to_string_lossy() }),
        )
        .await
        .unwrap();
    for link in ["a[href$='format=raw']", "a[href='/custody/ui/key']"] {
        alice
            .client()
            .find(Locator::Css(link))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + WAIT;
    let (recording, key) = loop {
        let files: Vec<PathBuf> = std::fs::read_dir(&downloads)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !p.to_string_lossy().ends_with(".crdownload"))
            .collect();
        let recording = files
            .iter()
            .find(|p| p.to_string_lossy().ends_with(".cast.zst"));
        let key = files.iter().find(|p| p.to_string_lossy().ends_with(".pem"));
        if let (Some(r), Some(k)) = (recording, key) {
            break (r.clone(), k.clone());
        }
        assert!(Instant::now() < deadline, "downloads: {files:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let verified = Command::new(env!("CARGO_BIN_EXE_custody"))
        .arg("verify")
        .arg(&recording)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(said.contains("intact"), "{said}");

    // A session without a terminal shows stdout and stderr apart.
    bob.client()
        .goto(&format!("{base}/custody/ui/sessions/{bob_id}"))
        .await
        .unwrap();
    assert_eq!(bob.text_of("#stdout").await.unwrap().trim(), "bob-out");
    assert_eq!(bob.text_of("#stderr").await.unwrap().trim(), "bob-err");
    photograph(&bob, &shots, "session-log").await;

    // alice asks for access in the browser; she cannot approve her own request; bob approves.
    let refused = tokio::task::block_in_place(|| {
        k.run([
            "--context",
            "alice",
            "exec",
            "-n",
            "kube-system",
            "coredns-sim",
            "--",
            "hostname",
        ])
        .unwrap()
    });
    assert!(
        !refused.status.success(),
        "the exec needs an approval first"
    );
    let c = alice.client();
    c.goto(&format!("{base}/custody/ui/requests"))
        .await
        .unwrap();
    c.find(Locator::Css("details.new-request summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for (name, value) in [
        ("namespace", "kube-system"),
        ("pod", "coredns-sim"),
        ("minutes", "15"),
        ("reason", "INC-7: DNS is slow"),
    ] {
        let input = c
            .find(Locator::Css(&format!(
                "details.new-request input[name={name}]"
            )))
            .await
            .unwrap();
        input.clear().await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    c.find(Locator::Css("details.new-request button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice.wait_for("dl.request", WAIT).await.unwrap();
    let request_url = c.current_url().await.unwrap();
    assert!(
        request_url.path().starts_with("/custody/ui/requests/"),
        "{request_url}"
    );
    assert_eq!(alice.text_of("h1 .state").await.unwrap(), "pending");
    assert!(
        c.find_all(Locator::Css("button.approve"))
            .await
            .unwrap()
            .is_empty(),
        "a requester is never offered their own approval"
    );
    photograph(&alice, &shots, "request-pending").await;
    c.goto(&format!("{base}/custody/ui/requests"))
        .await
        .unwrap();
    photograph(&alice, &shots, "requests").await;

    bob.client().goto(request_url.as_str()).await.unwrap();
    bob.wait_for("button.approve", WAIT)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    bob.wait_for("h1 .state.approved", WAIT).await.unwrap();
    photograph(&bob, &shots, "request-approved").await;
    let allowed = tokio::task::block_in_place(|| {
        k.run([
            "--context",
            "alice",
            "exec",
            "-n",
            "kube-system",
            "coredns-sim",
            "--",
            "hostname",
        ])
        .unwrap()
    });
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );

    // bob watches alice's live session while she types.
    let mut live = tokio::task::block_in_place(|| Terminal::start(&k, "alice", &["demo"]));
    let bc = bob.client();
    let deadline = Instant::now() + WAIT;
    loop {
        bc.goto(&format!("{base}/custody/ui/live")).await.unwrap();
        if !bc
            .find_all(Locator::Css("table.live a.button"))
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the live session is not listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    photograph(&bob, &shots, "live").await;
    bc.find(Locator::Css("table.live a.button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    bob.wait_for("pre.ap-term-text", WAIT).await.unwrap();
    // The viewer is attached once the player says so.
    let deadline = Instant::now() + WAIT;
    while bob.text_of("#live-state").await.unwrap() != "Live." {
        assert!(Instant::now() < deadline, "the live view never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| live.line("echo live-$((2*21))", "live-42"));
    let deadline = Instant::now() + WAIT;
    while !player_screen(&bob).await.iter().any(|l| l == "live-42") {
        assert!(
            Instant::now() < deadline,
            "{:#?}",
            player_screen(&bob).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    photograph(&bob, &shots, "watch").await;
    tokio::task::block_in_place(|| live.end());
    // The watch is in the audit trail, naming the watched session.
    let audit =
        std::fs::read_to_string(demo.dir.path().join("demo/data/audit/audit.jsonl")).unwrap();
    assert!(
        audit.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["request"]["verb"] == "watch" && v["initiator"]["username"] == "oidc:bob"
        }),
        "no watch event"
    );

    // The watched session's page says who watched it (bob audits, so he sees everyone's).
    let watched = bc.current_url().await.unwrap();
    let watched_id = watched
        .path()
        .trim_start_matches("/custody/ui/live/")
        .to_owned();
    let deadline = Instant::now() + WAIT;
    loop {
        bc.goto(&format!("{base}/custody/ui/sessions/{watched_id}"))
            .await
            .unwrap();
        let shown = bc.find_all(Locator::Css("ul.watchers li")).await.unwrap();
        if let Some(first) = shown.first() {
            assert!(first.text().await.unwrap().starts_with("oidc:bob at "));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watch is not on the session's page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The audit trail page, grouped by kubectl invocation and linked to sessions.
    bc.goto(&format!("{base}/custody/ui/audit")).await.unwrap();
    bob.wait_for("section.invocation", WAIT).await.unwrap();
    photograph(&bob, &shots, "audit").await;

    // Logging out ends the visit: the console sends the browser to the login again.
    c.goto(&format!("{base}/custody/ui/sessions"))
        .await
        .unwrap();
    c.find(Locator::Css("header.top form.who button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice.wait_for("main.message", WAIT).await.unwrap();
    assert_eq!(alice.text_of("h1").await.unwrap(), "Logged out");
    photograph(&alice, &shots, "logged-out").await;

    no_csp_violations(&alice).await;
    no_csp_violations(&bob).await;
    eprintln!("console screenshots: {}", shots.display());
}
