//! The frame of every page: readable on a phone, no script.

use maud::{DOCTYPE, Markup, html};

const STYLE: &str = "body{font-family:system-ui,sans-serif;line-height:1.5;max-width:48rem;margin:0 auto;padding:1rem}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.4rem;border-bottom:1px solid #ddd;vertical-align:top}\
.ok{color:#1a7f37}.missing{color:#cf222e}a.button,button{display:inline-block;padding:.6rem 1rem;font-size:1rem}\
code{word-break:break-all}";

pub fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Conveyor" }
                style { (STYLE) }
            }
            body {
                main { (body) }
            }
        }
    }
}
