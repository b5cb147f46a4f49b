//! The status page of `run --listen`, in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver): the page loads and shows a suspended change with
//! its error; without logging in there is no button, a wrong token and a post without the
//! session are refused (and change nothing); with the token, clicking "discard" removes a
//! change for good, and clicking "resubmit" makes the change pending again and it is applied.
//! Against real PostgreSQL with the real binary.
//!
//! Needs `TANDEM_TEST_CHROMEDRIVER` (the chromedriver path) when the tests are built; without
//! it the test is reported as ignored (`.ci/run` installs the packages and sets it).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::{count, eventually_or, log, Env, A_SCHEMA, B_SCHEMA, DEMO_CONFIG};
use fantoccini::{ClientBuilder, Locator};

const TOKEN: &str = "operator-secret-7f3a";
const LIMIT: Duration = Duration::from_secs(60);
const LOG: &str = "run.log";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills a child process when dropped (chromedriver, tandem run).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A raw HTTP request: (status, headers and body as text).
fn http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(request.as_bytes()).expect("send");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw)
}

fn post(port: u16, path: &str, body: &str, extra: &str) -> (u16, String) {
    http(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// The value of the hidden `csrf` field in a page's HTML.
fn csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap_or("").to_string()
}

/// Waits (after a click that navigates) until element `id` of the page shows a text that
/// `want` accepts, and returns it: the old page's elements may answer until the new one is in.
async fn text_of(browser: &fantoccini::Client, id: &str, want: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < LIMIT {
        if let Ok(e) = browser.find(Locator::Id(id)).await {
            if let Ok(t) = e.text().await {
                if want(&t) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("#{id} never showed the expected text; last: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tandem_browser),
    ignore = "needs chromium and chromium-driver: set TANDEM_TEST_CHROMEDRIVER when building the tests (.ci/run does)"
)]
async fn the_status_page_shows_a_suspended_change_and_resubmits_it_only_with_the_token() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let driver_path = std::env::var("TANDEM_TEST_CHROMEDRIVER")
        .expect("TANDEM_TEST_CHROMEDRIVER: the chromedriver to drive Chromium with");
    let (a, b) = common::fresh_dbs("status_page");
    let config = DEMO_CONFIG.replace("[sync]\n", "[sync]\nmax_attempts = 1\nretry_min_ms = 50\n")
        + &format!("\n[service]\ntoken = \"{TOKEN}\"\n");
    let env = Env::on(a, b, &config, A_SCHEMA, B_SCHEMA, true).await;

    // B refuses one order until the constraint goes: the change is suspended.
    env.b
        .batch_execute("ALTER TABLE orders ADD CONSTRAINT no_hold CHECK (customer <> 'on hold')")
        .await
        .expect("constraint");
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('on hold'), ('fine')"#)
        .await
        .expect("orders");
    let port = free_port();
    let file = File::create(env.dir.path().join(LOG)).expect("log file");
    let _run = Killed(
        env.tandem()
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("tandem run"),
    );
    let suspended = r#"SELECT count(*) FROM tandem.outbox WHERE suspended"#;
    eventually_or(
        LIMIT,
        "the refused order is suspended",
        || async { count(&env.a, suspended).await == 1 },
        || log(&env, LOG),
    )
    .await;
    let seq = count(&env.a, "SELECT max(seq) FROM tandem.outbox WHERE suspended").await;
    let id = format!("A-{seq}");
    assert!(
        log(&env, LOG).contains(&format!(
            "suspended: fix the cause, then run `tandem suspended resubmit {id}`"
        )),
        "the log says what to run: {}",
        log(&env, LOG)
    );

    // Chromium, headless, through chromedriver.
    let driver_port = free_port();
    let _driver = Killed(
        Command::new(&driver_path)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"]
        }),
    );
    let started = Instant::now();
    let browser = loop {
        match ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(c) => break c,
            Err(e) if started.elapsed() < LIMIT => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    };
    let page = format!("http://127.0.0.1:{port}/");

    // The page loads and shows the suspended change with its error; no buttons without login.
    eventually_or(
        LIMIT,
        "the page lists the suspended change",
        || {
            let (browser, page, id) = (&browser, &page, &id);
            async move {
                browser.goto(page).await.is_ok()
                    && browser
                        .find(Locator::Id(&format!("change-{id}")))
                        .await
                        .is_ok()
            }
        },
        || log(&env, LOG),
    )
    .await;
    let row = browser
        .find(Locator::Id(&format!("change-{id}")))
        .await
        .expect("row")
        .text()
        .await
        .expect("row text");
    assert!(row.contains("order") && row.contains("no_hold"), "{row}");
    let summary = browser
        .find(Locator::Id("summary"))
        .await
        .expect("summary")
        .text()
        .await
        .expect("text");
    assert!(summary.contains("1 suspended change"), "{summary}");
    assert!(
        browser
            .find(Locator::Id(&format!("resubmit-{id}")))
            .await
            .is_err(),
        "no resubmit button before logging in"
    );
    let html = browser.source().await.expect("source");
    assert!(!html.contains(TOKEN), "the page never shows the token");

    // Refused without the token: a wrong token in the browser, and a post without a session.
    browser
        .find(Locator::Id("token"))
        .await
        .expect("token field")
        .send_keys("not-the-token")
        .await
        .expect("type");
    browser
        .find(Locator::Id("login-button"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("click");
    text_of(&browser, "refused", |t| t == "refused: wrong token").await;
    let form = format!("csrf={}&id={id}", csrf(&html));
    let (code, body) = post(port, "/suspended/resubmit", &form, "");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("log in with the operator token first"),
        "{body}"
    );
    // A forged session cookie, or a post from another origin, is refused too.
    let (code, _) = post(
        port,
        "/suspended/resubmit",
        &form,
        "Cookie: tandem_session=guess\r\n",
    );
    assert_eq!(code, 403);
    let (code, body) = post(
        port,
        "/login",
        &format!("csrf={}&token={TOKEN}", csrf(&html)),
        "Origin: http://evil.example\r\n",
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("another origin"), "{body}");
    assert_eq!(count(&env.a, suspended).await, 1, "nothing was resubmitted");

    // With the token: log in, fix the cause, click resubmit; the change is applied.
    browser.goto(&page).await.expect("page");
    browser
        .find(Locator::Id("token"))
        .await
        .expect("token field")
        .send_keys(TOKEN)
        .await
        .expect("type");
    browser
        .find(Locator::Id("login-button"))
        .await
        .expect("login button")
        .click()
        .await
        .expect("click");
    text_of(&browser, "message", |t| t.starts_with("logged in")).await;
    if let Ok(dir) = std::env::var("TANDEM_SCREENSHOT_DIR") {
        let png = browser.screenshot().await.expect("screenshot");
        std::fs::write(std::path::Path::new(&dir).join("status-page.png"), png)
            .expect("write screenshot");
    }
    // A second refused order, discarded with its button: it never reaches B.
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('on hold')"#)
        .await
        .expect("second order");
    eventually_or(
        LIMIT,
        "the second order is suspended",
        || async { count(&env.a, suspended).await == 2 },
        || log(&env, LOG),
    )
    .await;
    let seq2 = count(&env.a, "SELECT max(seq) FROM tandem.outbox WHERE suspended").await;
    let id2 = format!("A-{seq2}");
    eventually_or(
        LIMIT,
        "the page offers to discard the second order",
        || {
            let (browser, page, id2) = (&browser, &page, &id2);
            async move {
                browser.goto(page).await.is_ok()
                    && browser
                        .find(Locator::Id(&format!("discard-{id2}")))
                        .await
                        .is_ok()
            }
        },
        || log(&env, LOG),
    )
    .await;
    browser
        .find(Locator::Id(&format!("discard-{id2}")))
        .await
        .expect("a discard button")
        .click()
        .await
        .expect("click discard");
    let want = format!("{id2} discarded (the log keeps its image)");
    text_of(&browser, "message", |t| t == want).await;
    assert_eq!(count(&env.a, suspended).await, 1, "only the first is left");
    assert!(
        log(&env, LOG).contains(&format!("discarded suspended change {id2}")),
        "{}",
        log(&env, LOG)
    );

    env.b
        .batch_execute("ALTER TABLE orders DROP CONSTRAINT no_hold")
        .await
        .expect("drop constraint");
    browser
        .find(Locator::Id(&format!("resubmit-{id}")))
        .await
        .expect("a resubmit button once logged in")
        .click()
        .await
        .expect("click resubmit");
    let want = format!("{id} resubmitted: pending again, attempts reset");
    text_of(&browser, "message", |t| t == want).await;
    eventually_or(
        LIMIT,
        "the resubmitted order arrives at B",
        || async {
            count(
                &env.b,
                "SELECT count(*) FROM orders WHERE customer = 'on hold'",
            )
            .await
                == 1
        },
        || log(&env, LOG),
    )
    .await;
    eventually_or(
        LIMIT,
        "the page lists no suspended change",
        || {
            let (browser, page) = (&browser, &page);
            async move {
                browser.goto(page).await.is_ok()
                    && browser.find(Locator::Id("no-suspended")).await.is_ok()
            }
        },
        || log(&env, LOG),
    )
    .await;
    eventually_or(
        LIMIT,
        "A's outbox is empty",
        || async { count(&env.a, "SELECT count(*) FROM tandem.outbox").await == 0 },
        || log(&env, LOG),
    )
    .await;
    assert_eq!(
        count(
            &env.b,
            "SELECT count(*) FROM orders WHERE customer = 'on hold'"
        )
        .await,
        1,
        "the discarded order never arrived"
    );
    assert!(
        !log(&env, LOG).contains(TOKEN),
        "the log never shows the token"
    );
    let _ = browser.close().await;
}
