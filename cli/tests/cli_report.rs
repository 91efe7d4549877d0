//! `kpl bench --report`: the HTML page is self-contained, renders in a real headless browser
//! (Debian's chromium) to something that is not blank, and the figures it shows are the ones
//! the JSON of the same run gives.
//!
//! The browser comes from `KPL_CHROMIUM` (scripts/test.sh installs Debian's chromium and sets
//! it) or `chromium` on the PATH. It loads only the file: every name resolves to nothing and
//! every connection goes to a closed port of 127.0.0.1, and its background services are off.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{json_report, kpl};

fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("KPL_CHROMIUM") {
        return PathBuf::from(path);
    }
    for dir in std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
    {
        for name in ["chromium", "chromium-browser"] {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    panic!(
        "no chromium: set KPL_CHROMIUM, or run scripts/test.sh, which installs Debian's chromium"
    );
}

/// Runs the headless browser on `page` with `args`, at most 120 s; its standard output (into
/// a file beside the page: a pipe left unread would fill and stall it).
fn browse(page: &Path, args: &[&str]) -> String {
    let out_path = page.with_extension("stdout");
    let mut child = Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--disable-domain-reliability",
            "--no-pings",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "chromium failed: {status:?}");
    std::fs::read_to_string(&out_path).unwrap()
}

/// Every `data-figure="NAME" data-run="I">VALUE<` in the page.
fn figures(dom: &str) -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for part in dom.split("data-figure=\"").skip(1) {
        let (name, rest) = part.split_once('"').unwrap();
        let rest = rest.trim_start().strip_prefix("data-run=\"").unwrap();
        let (run, rest) = rest.split_once('"').unwrap();
        let value = rest[1..].split('<').next().unwrap();
        out.push((name.to_owned(), run.parse().unwrap(), value.to_owned()));
    }
    out
}

#[test]
fn the_report_renders_in_a_browser_and_shows_the_figures_of_the_json() {
    let dir = std::env::temp_dir().join(format!("kpl-report-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    let report = json_report(&kpl(
        &[
            "bench",
            "--sink",
            "memory",
            "--records",
            "4000",
            "--producers",
            "2",
            "--sweep",
            "RecordMaxBufferedTime=20,100",
            "--report",
            page.to_str().unwrap(),
            "--json",
        ],
        b"",
    ));
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch (the SVG namespace is a name, not a request).
    for fetch in ["src=", "href=", "<link", "@import", "url("] {
        assert!(!html.contains(fetch), "the page fetches something: {fetch}");
    }
    for section in [
        "The runs side by side",
        "The bill",
        "The sweep",
        "The fleet",
        "latency",
    ] {
        assert!(html.contains(section), "no {section:?} section");
    }

    let dom = browse(&page, &["--dump-dom"]);
    let shown = figures(&dom);
    let runs = report["runs"].as_array().unwrap();
    // Five table rows and three bill columns, for each of the four runs.
    assert_eq!(shown.len(), 8 * runs.len(), "{shown:?}");
    for (name, run, value) in &shown {
        let r = &runs[*run];
        let want = match name.as_str() {
            "shards_needed" => r["bill"]["shards_needed"].to_string(),
            "provisioned_monthly_usd" | "on_demand_monthly_usd" => {
                format!("{:.2}", r["bill"][name].as_f64().unwrap())
            }
            field => r[field].to_string(),
        };
        assert_eq!(value, &want, "{name} of run {run}");
    }

    let shot = dir.join("shot.png");
    browse(
        &page,
        &[
            "--window-size=1200,1600",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let pixmap = resvg::tiny_skia::Pixmap::decode_png(&std::fs::read(&shot).unwrap()).unwrap();
    let pixels = pixmap.pixels();
    let white = pixels
        .iter()
        .filter(|p| p.red() > 245 && p.green() > 245 && p.blue() > 245)
        .count();
    let colours: std::collections::HashSet<(u8, u8, u8)> = pixels
        .iter()
        .map(|p| (p.red(), p.green(), p.blue()))
        .collect();
    assert!(
        white < pixels.len() * 98 / 100 && colours.len() > 20,
        "the screenshot looks blank: {white} of {} pixels white, {} colours",
        pixels.len(),
        colours.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
