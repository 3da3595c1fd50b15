//! The dashboard's static files, embedded in the binary (no CDN, no network: machines may be
//! offline, and a file served is the file reviewed). They hold no data: everything shown is
//! fetched from the API after login.

/// One embedded file.
#[derive(Debug)]
pub(crate) struct Asset {
    /// Path below `/dashboard/`.
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset { path: $path, content_type: $type, body: include_str!(concat!("../../dashboard/", $path)) }
    };
}

/// Every file, `index.html` first.
pub(crate) const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("approvals-feed.js", JS),
    asset!("views/overview.js", JS),
    asset!("views/peers.js", JS),
    asset!("views/context.js", JS),
    asset!("views/locks.js", JS),
    asset!("views/messages.js", JS),
    asset!("views/tasks.js", JS),
    asset!("views/approvals.js", JS),
    asset!("views/terminal.js", JS),
    asset!("xterm-csp.js", JS),
    // xterm.js from the npm registry, unchanged (dashboard/vendor/xterm/README.md).
    asset!("vendor/xterm/xterm.mjs", JS),
    asset!("vendor/xterm/addon-fit.mjs", JS),
    asset!("vendor/xterm/xterm.css", CSS),
];

/// The file at `path` (below `/dashboard/`; empty means `index.html`).
pub(crate) fn find(path: &str) -> Option<&'static Asset> {
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|asset| asset.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_is_the_default_and_unknown_files_are_absent() {
        assert_eq!(find("").unwrap().path, "index.html");
        assert_eq!(find("views/peers.js").unwrap().content_type, JS);
        assert!(find("../Cargo.toml").is_none());
        assert!(find("views/").is_none());
    }

    #[test]
    fn no_file_pulls_anything_from_the_network_or_runs_inline_code() {
        for asset in ASSETS {
            // Vendored code keeps its licence comments and XML namespace URIs; it must not reach
            // the network or evaluate strings either.
            let ours = !asset.path.starts_with("vendor/");
            let forbidden: &[&str] = if ours {
                &["http://", "https://", "innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", " onclick="]
            } else {
                &["fetch(", "XMLHttpRequest", "import(", "eval(", "new Function", "sourceMappingURL"]
            };
            for forbidden in forbidden {
                assert!(!asset.body.contains(forbidden), "{} contains {forbidden}", asset.path);
            }
        }
        let index = find("index.html").unwrap().body;
        assert!(!index.contains("<script>") && !index.contains("style="), "no inline script or style");
    }
}
