//! The status page of `run --listen` (`/`): per entity and direction what is pending, the lag
//! (with a chart of the last hour), changes applied per second, conflicts, entities paused by
//! schema drift, and the suspended changes with their errors, each with buttons to resubmit
//! or discard it.
//!
//! Server-rendered HTML (askama templates in `templates/`, escaped by default: errors and keys
//! hold user data), no JavaScript. Reading needs nothing; acting needs the operator token
//! (`[service] token` / `token_file`, or `$TANDEM_SERVICE_TOKEN`): a login form exchanges it
//! for a session cookie (`HttpOnly`, `SameSite=Strict`, valid while this process runs). Every
//! action is a POST that must carry the page's per-process CSRF value in a hidden field, and,
//! when the browser says where it comes from (`Origin`, `Sec-Fetch-Site`), come from this
//! page's own origin. Without a token configured the page is read-only.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use askama::Template;
use chrono::{DateTime, Utc};
use rand::RngCore;
use tokio::sync::watch;
use tracing::{info, warn};

use super::Role;
use crate::config::{Config, Side, Token};
use crate::endpoint::{EntityStatus, SuspendedChange};
use crate::sync::{metrics::written_totals, Sides};

/// How often the chart's samples are taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// One hour of samples.
const SAMPLES: usize = 360;
/// Suspended changes listed on the page (oldest first, per side).
const LISTED: i64 = 50;
/// The environment variable that gives the token when the config does not.
pub const TOKEN_ENV: &str = "TANDEM_SERVICE_TOKEN";
/// The session cookie's name.
const COOKIE: &str = "tandem_session";

/// One sample of every entity's lag and of the changes written so far.
#[derive(Debug, Clone)]
struct Sample {
    at: DateTime<Utc>,
    /// Oldest pending age in seconds, per (entity, side the changes come from).
    lag: BTreeMap<(String, Side), f64>,
    written: BTreeMap<(String, Side), u64>,
}

/// What the page knows across requests: the samples, who may act, the CSRF value.
pub struct Page {
    config: Arc<Config>,
    token_from_env: Option<Token>,
    /// The session cookie's value after a good login (random, per process).
    session: String,
    /// The hidden field every form carries (random, per process).
    csrf: String,
    samples: Mutex<VecDeque<Sample>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Page {
    /// The page for `config`; the token from the config, else from [`TOKEN_ENV`].
    pub fn new(config: Arc<Config>) -> Page {
        let token_from_env = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(Token::new);
        Page {
            config,
            token_from_env,
            session: random_hex(),
            csrf: random_hex(),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// The operator token now (a `token_file` is read anew: rotation needs no restart).
    fn token(&self) -> Option<Token> {
        match self.config.service.current_token() {
            Ok(Some(t)) => Some(t),
            Ok(None) => self.token_from_env.clone(),
            Err(e) => {
                warn!("status page: {e}; actions refused until it can be read");
                None
            }
        }
    }

    fn token_configured(&self) -> bool {
        self.config.service.token.is_some()
            || self.config.service.token_file.is_some()
            || self.token_from_env.is_some()
    }

    /// Takes one sample now.
    async fn sample(&self, sides: &Sides) {
        let now = Utc::now();
        let mut lag = BTreeMap::new();
        for side in [Side::A, Side::B] {
            if let Ok(Ok(st)) = tokio::time::timeout(SAMPLE_EVERY, sides.get(side).status()).await {
                for s in st {
                    lag.insert((s.entity.clone(), side), age_s(now, &s));
                }
            }
        }
        let sample = Sample {
            at: now,
            lag,
            written: written_totals(),
        };
        if let Ok(mut q) = self.samples.lock() {
            q.push_back(sample);
            while q.len() > SAMPLES {
                q.pop_front();
            }
        }
    }

    fn history(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn age_s(now: DateTime<Utc>, s: &EntityStatus) -> f64 {
    s.oldest_pending
        .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// Samples every [`SAMPLE_EVERY`] until `shutdown`.
pub async fn sample(page: Arc<Page>, sides: Sides, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        page.sample(&sides).await;
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            r = shutdown.changed() => if r.is_err() { return },
        }
    }
}

/// One entity in one direction.
struct Flow {
    entity: String,
    direction: String,
    pending: i64,
    lag: String,
    /// Inline SVG built here from numbers only (no user data): rendered unescaped.
    chart: String,
    per_second: String,
    suspended: i64,
    conflicts: i64,
    paused: Option<String>,
}

/// A suspended change as listed.
struct Parked {
    id: String,
    entity: String,
    op: String,
    key: String,
    attempts: i32,
    last_failed: String,
    error: String,
}

#[derive(Template)]
#[template(path = "status.html")]
struct View<'a> {
    state: &'a str,
    summary: String,
    flows: Vec<Flow>,
    parked: Vec<Parked>,
    problems: Vec<String>,
    can_act: bool,
    token_configured: bool,
    csrf: &'a str,
    message: Option<String>,
    generated: String,
}

#[derive(Template)]
#[template(path = "refused.html")]
struct Refused<'a> {
    reason: &'a str,
}

/// What a request carries that the page looks at.
pub struct Request<'a> {
    pub cookie: Option<&'a str>,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
    pub query: Option<&'a str>,
}

/// What to answer.
pub enum Answer {
    Html(u16, String),
    /// 303 to `location`, optionally setting the session cookie.
    Redirect {
        location: String,
        set_cookie: Option<String>,
    },
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// A sparkline of `points` (seconds ago, lag) over the last hour, numbers only.
fn chart(points: &[(f64, f64)]) -> String {
    const W: f64 = 240.0;
    const H: f64 = 36.0;
    let max = points.iter().map(|p| p.1).fold(1.0_f64, f64::max);
    let xy: Vec<String> = points
        .iter()
        .map(|(ago, lag)| {
            // 2 px margins, so the newest point's dot shows whole.
            let x = 2.0 + (W - 5.0) * (1.0 - (ago / 3600.0).min(1.0));
            let y = H - (lag / max * (H - 2.0)) - 1.0;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    // The newest sample as a dot, so one sample shows too.
    let dot = xy
        .last()
        .and_then(|p| p.split_once(','))
        .map(|(x, y)| format!("<circle cx=\"{x}\" cy=\"{y}\" r=\"2\"/>"))
        .unwrap_or_default();
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\"><title>lag over the last hour, at most {}</title><rect width=\"{W}\" height=\"{H}\"/><polyline points=\"{}\"/>{dot}</svg>",
        seconds(max),
        xy.join(" ")
    )
}

impl Page {
    /// `GET /`.
    pub async fn show(&self, sides: &Sides, role: &Role, req: &Request<'_>) -> Answer {
        let now = Utc::now();
        let mut problems = Vec::new();
        let mut status: BTreeMap<(String, Side), EntityStatus> = BTreeMap::new();
        let mut parked = Vec::new();
        for side in [Side::A, Side::B] {
            let ep = sides.get(side);
            match ep.status().await {
                Ok(list) => {
                    for s in list {
                        status.insert((s.entity.clone(), side), s);
                    }
                }
                Err(e) => problems.push(crate::secret::redact(&e.to_string())),
            }
            match ep.suspended(None, LISTED).await {
                Ok(list) => parked.extend(list.iter().map(parked_view)),
                Err(e) => problems.push(crate::secret::redact(&e.to_string())),
            }
        }
        let paused = role.paused.reasons();
        let history = self.history();
        let totals = written_totals();
        let mut flows = Vec::new();
        for e in &self.config.entities {
            for from in [Side::A, Side::B] {
                if !e.direction.flows(from) {
                    continue;
                }
                let k = (e.name.clone(), from);
                let here = status.get(&k);
                let there = status.get(&(e.name.clone(), from.other()));
                let points: Vec<(f64, f64)> = history
                    .iter()
                    .filter_map(|s| {
                        let ago = (now - s.at).num_milliseconds() as f64 / 1000.0;
                        s.lag.get(&k).map(|l| (ago, *l))
                    })
                    .filter(|(ago, _)| *ago <= 3600.0)
                    .collect();
                // Applied per second over the last minute (or since the oldest sample).
                let base = history
                    .iter()
                    .find(|s| (now - s.at).num_seconds() <= 70)
                    .map(|s| (s.at, s.written.get(&k).copied().unwrap_or(0)));
                let per_second = match base {
                    Some((at, n)) if (now - at).num_milliseconds() > 500 => {
                        let dt = (now - at).num_milliseconds() as f64 / 1000.0;
                        let now_n = totals.get(&k).copied().unwrap_or(0);
                        format!("{:.1}", now_n.saturating_sub(n) as f64 / dt)
                    }
                    _ => "–".into(),
                };
                flows.push(Flow {
                    entity: e.name.clone(),
                    direction: format!("{from} → {}", from.other()),
                    pending: here.map_or(0, |s| s.pending),
                    lag: here
                        .and_then(|s| s.oldest_pending.map(|_| seconds(age_s(now, s))))
                        .unwrap_or_else(|| "–".into()),
                    chart: chart(&points),
                    per_second,
                    suspended: here.map_or(0, |s| s.suspended),
                    conflicts: there.map_or(0, |s| s.conflicts),
                    paused: paused.get(&e.name).map(|w| w.join("; ")),
                });
            }
        }
        let suspended: i64 = flows.iter().map(|f| f.suspended).sum();
        let mut needs = Vec::new();
        if !paused.is_empty() {
            needs.push(format!(
                "{} paused by schema drift",
                paused.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if suspended > 0 {
            needs.push(format!("{suspended} suspended change(s)"));
        }
        if !problems.is_empty() {
            needs.push("a database cannot be read".into());
        }
        let summary = if needs.is_empty() {
            "all flowing: nothing suspended or paused".to_string()
        } else {
            format!("needs attention: {}", needs.join("; "))
        };
        let state = if role.is_active() {
            "active: this instance applies the changes".to_string()
        } else {
            role.why_not()
        };
        let view = View {
            state: &state,
            summary,
            flows,
            parked,
            problems,
            can_act: self.authorized(req),
            token_configured: self.token_configured(),
            csrf: &self.csrf,
            message: req.query.and_then(message),
            generated: now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        };
        match view.render() {
            Ok(html) => Answer::Html(200, html),
            Err(e) => Answer::Html(500, format!("cannot render the page: {e}")),
        }
    }

    fn authorized(&self, req: &Request<'_>) -> bool {
        self.token_configured()
            && req
                .cookie
                .and_then(|c| cookie(c, COOKIE))
                .is_some_and(|v| Token::new(self.session.clone()).matches(v))
    }

    /// Refuses a POST that does not come from this page: the CSRF field, and the browser's
    /// own word on where the request comes from when it gives one.
    fn same_origin(
        &self,
        req: &Request<'_>,
        form: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let csrf_ok = form
            .get("csrf")
            .is_some_and(|v| Token::new(self.csrf.clone()).matches(v));
        if !csrf_ok {
            return Err(
                "refused: the form is not this page's (reload the page and try again)".into(),
            );
        }
        if let Some(site) = req.fetch_site {
            if site != "same-origin" && site != "none" {
                return Err("refused: the request comes from another site".into());
            }
        }
        if let Some(origin) = req.origin {
            let own = req.host.map(|h| format!("http://{h}"));
            if own.as_deref() != Some(origin) {
                return Err("refused: the request comes from another origin".into());
            }
        }
        Ok(())
    }

    /// `POST /login`: the token for a session cookie.
    pub fn login(&self, req: &Request<'_>, body: &str) -> Answer {
        let form = parse_form(body);
        if let Err(why) = self.same_origin(req, &form) {
            return refused(&why);
        }
        let Some(token) = self.token() else {
            return refused("refused: no operator token is configured: the page is read-only (set [service] token or token_file in tandem.toml, or $TANDEM_SERVICE_TOKEN, and restart `tandem run`)");
        };
        if !form.get("token").is_some_and(|t| token.matches(t)) {
            warn!("status page: a login with a wrong token was refused");
            return refused("refused: wrong token");
        }
        info!("status page: an operator logged in");
        Answer::Redirect {
            location: "/?msg=login".into(),
            set_cookie: Some(format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                self.session
            )),
        }
    }

    /// `POST /suspended/resubmit` and `/suspended/discard`.
    pub async fn act(&self, sides: &Sides, req: &Request<'_>, body: &str, discard: bool) -> Answer {
        let form = parse_form(body);
        if let Err(why) = self.same_origin(req, &form) {
            return refused(&why);
        }
        if !self.token_configured() {
            return refused("refused: the page is read-only (no operator token is configured)");
        }
        if !self.authorized(req) {
            return refused("refused: log in with the operator token first");
        }
        let Some((side, seq)) = form.get("id").and_then(|id| parse_id(id)) else {
            return refused("refused: not a suspended change's id (e.g. A-123)");
        };
        let ep = sides.get(side);
        let (done, verb) = if discard {
            match ep.discard(seq).await {
                Ok(Some(c)) => {
                    // As `tandem suspended discard`: the log keeps what was removed.
                    info!(
                        "status page: discarded suspended change {side}-{seq} of entity {} (key {}): image {}",
                        c.entity, c.key, c.image
                    );
                    (true, "discarded")
                }
                Ok(None) => (false, "discarded"),
                Err(e) => return refused(&crate::secret::redact(&e.to_string())),
            }
        } else {
            match ep.resubmit(Some(seq)).await {
                Ok(n) => {
                    if n > 0 {
                        info!("status page: resubmitted suspended change {side}-{seq}");
                    }
                    (n > 0, "resubmitted")
                }
                Err(e) => return refused(&crate::secret::redact(&e.to_string())),
            }
        };
        let msg = if done { verb } else { "none" };
        Answer::Redirect {
            location: format!("/?msg={msg}&id={side}-{seq}"),
            set_cookie: None,
        }
    }
}

fn refused(reason: &str) -> Answer {
    match (Refused { reason }).render() {
        Ok(html) => Answer::Html(403, html),
        Err(_) => Answer::Html(403, "refused".into()),
    }
}

fn parked_view(c: &SuspendedChange) -> Parked {
    Parked {
        id: format!("{}-{}", c.side, c.seq),
        entity: c.entity.clone(),
        op: c.op.clone(),
        key: cut(&c.key, 80),
        attempts: c.attempts,
        last_failed: c
            .last_failed_at
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default(),
        error: cut(c.last_error.as_deref().unwrap_or(""), 400),
    }
}

/// `A-123` (as the page and `tandem suspended list` write ids).
fn parse_id(id: &str) -> Option<(Side, i64)> {
    let (side, seq) = id.trim().split_once('-')?;
    let side = match side {
        "A" | "a" => Side::A,
        "B" | "b" => Side::B,
        _ => return None,
    };
    Some((side, seq.parse().ok().filter(|s| *s > 0)?))
}

/// The line the page shows after an action (fixed texts: nothing from the query is shown
/// but an id that parsed).
fn message(query: &str) -> Option<String> {
    let q = parse_form(query);
    let id = q
        .get("id")
        .and_then(|i| parse_id(i))
        .map(|(s, n)| format!("{s}-{n}"))
        .unwrap_or_default();
    match q.get("msg").map(String::as_str) {
        Some("login") => Some("logged in: the buttons act on suspended changes".into()),
        Some("resubmitted") => Some(format!("{id} resubmitted: pending again, attempts reset")),
        Some("discarded") => Some(format!("{id} discarded (the log keeps its image)")),
        Some("none") => Some(format!("{id} is no longer suspended: nothing done")),
        _ => None,
    }
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// `application/x-www-form-urlencoded` (also a query string) into its fields; the last of a
/// repeated field wins.
pub fn parse_form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_ids_parse() {
        let f = parse_form("id=A-12&token=a%2Bb+c&csrf=x%");
        assert_eq!(f.get("id").map(String::as_str), Some("A-12"));
        assert_eq!(f.get("token").map(String::as_str), Some("a+b c"));
        assert_eq!(f.get("csrf").map(String::as_str), Some("x%"));
        assert_eq!(parse_id("B-7"), Some((Side::B, 7)));
        assert_eq!(parse_id("C-7"), None);
        assert_eq!(parse_id("A-x"), None);
        assert_eq!(cookie("a=1; tandem_session=xyz", COOKIE), Some("xyz"));
    }

    #[test]
    fn messages_show_only_fixed_texts_and_a_parsed_id() {
        assert_eq!(
            message("msg=resubmitted&id=A-5").as_deref(),
            Some("A-5 resubmitted: pending again, attempts reset")
        );
        assert_eq!(
            message("msg=discarded&id=<script>").as_deref(),
            Some(" discarded (the log keeps its image)")
        );
        assert_eq!(message("msg=<b>"), None);
    }

    #[test]
    fn the_chart_is_numbers_only() {
        let svg = chart(&[(3600.0, 0.0), (10.0, 5.0), (0.0, 2.0)]);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(
            svg.contains("points=\"2.0,35.0 236.3,1.0 237.0,21.4\""),
            "{svg}"
        );
    }
}
