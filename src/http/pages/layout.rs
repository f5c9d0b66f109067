//! The frame every page shares (navigation, styles readable on a phone) and the small
//! formats they share: times, durations, state names.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::auth::Viewer;

const STYLE: &str = "
:root { color-scheme: light dark; --line: #8886; --muted: #777; --accent: #2563eb; }
* { box-sizing: border-box; }
body { font: 16px/1.45 system-ui, sans-serif; margin: 0; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center;
         padding: .5rem 1rem; border-bottom: 1px solid var(--line); }
header nav { display: flex; flex-wrap: wrap; gap: .25rem 1rem; }
header form { margin-left: auto; }
main { padding: 1rem; max-width: 80rem; margin: 0 auto; }
a { color: var(--accent); }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible,
summary:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.skip { position: absolute; left: -100vw; }
.skip:focus { left: 1rem; top: .5rem; background: Canvas; padding: .25rem .5rem; }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.2rem; margin: 1.5rem 0 .5rem; }
h3 { font-size: 1rem; margin: 0 0 .25rem; }
button, input, select { font: inherit; padding: .35rem .6rem; }
label { display: block; font-weight: 600; }
.filters { display: flex; flex-wrap: wrap; gap: .75rem; align-items: end; }
.columns { display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); }
.column ul, ul.plain { list-style: none; padding: 0; margin: 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .6rem; margin-bottom: .6rem; }
.meta, .hint { color: var(--muted); font-size: .9rem; margin: .2rem 0; }
.reason { margin: .3rem 0 0; }
.error, .missing { color: #c0392b; font-weight: 600; }
.ok { color: #1a7f37; }
a.button { display: inline-block; padding: .6rem 1rem; font-size: 1rem; }
.state { display: inline-block; border: 1px solid var(--line); border-radius: 1rem;
         padding: 0 .5rem; font-size: .85rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line);
         vertical-align: top; }
.table { overflow-x: auto; }
td form, .card form { display: inline; }
pre { overflow-x: auto; padding: .5rem; border: 1px solid var(--line); border-radius: 6px;
      font-size: .85rem; max-height: 70vh; }
.wrap { white-space: pre-wrap; }
code, .wrap { overflow-wrap: anywhere; }
ol.timeline { padding-left: 1.5rem; }
ol.timeline li { margin-bottom: .4rem; }
";

/// A whole page: `viewer` is who is signed in, for the navigation (none on the sign-in page
/// and on errors).
pub fn page(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Conveyor" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    strong { "Conveyor" }
                    @if let Some(viewer) = viewer {
                        nav aria-label="Pages" {
                            a href="/tasks" { "Board" }
                            a href="/repositories" { "Repositories" }
                        }
                        @if let Some(csrf) = viewer.csrf() {
                            form method="post" action="/signout" {
                                input type="hidden" name="csrf" value=(csrf);
                                button type="submit" { "Sign out (" (viewer.who()) ")" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

/// `850 ms`, `12.3 s`, `4 min 05 s`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// A state's name as people read it: `in_progress` → `in progress`.
pub fn state(name: &str) -> Markup {
    html! { span.state { (name.replace('_', " ")) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_their_scale() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(12_345), "12.3 s");
        assert_eq!(duration(245_000), "4 min 05 s");
        assert_eq!(duration(-5), "0 ms");
    }
}
