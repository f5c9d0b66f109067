//! Text cut to size: what GitHub accepts in a comment, a check run or a pull request, and
//! what Conveyor keeps of a step's output. Cuts keep the beginning and the end, say how much
//! went, and never split a character.
//!
//! GitHub counts its limits in characters; these functions bound bytes, which bounds
//! characters too (a character is at least one byte) whether GitHub counts code points or
//! UTF-16 units, at the price of cutting multibyte text a little early.

use std::borrow::Cow;

/// GitHub's limit for a check run's `output.summary` and `output.text`; issue comments and
/// pull request bodies allow one more, so one limit serves every body.
pub const GITHUB_BODY_MAX: usize = 65_535;

/// GitHub caps issue and pull request titles at 256 characters.
pub const GITHUB_TITLE_MAX_CHARS: usize = 256;

/// GitHub documents no limit for a check run's `output.title`: this conservative bound is the
/// one for issue titles.
pub const CHECK_RUN_TITLE_MAX_CHARS: usize = 256;

/// Lines of quoted output longer than this many characters are cut: one minified file or
/// progress bar must not crowd out the lines around it.
pub const LINE_MAX_CHARS: usize = 1_000;

/// `text` within `max_bytes`: its beginning and, larger, its end (where failures show), with
/// a line between them saying how much was cut. A cut falls on a line end when one is near.
/// A budget too small for that line (under about 50 bytes) keeps the end alone.
pub fn head_and_tail(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    // The marker's length depends on its numbers; the whole text's length bounds them.
    let widest_marker = cut_marker(text.len(), text.len(), true).len();
    let Some(budget) = max_bytes.checked_sub(widest_marker) else {
        return text[ceil_char_boundary(text, text.len() - max_bytes)..].to_owned();
    };
    let head_budget = budget / 3;
    let tail_budget = budget - head_budget;
    let head_end = head_end(text, floor_char_boundary(text, head_budget));
    let tail_start = tail_start(text, ceil_char_boundary(text, text.len() - tail_budget));
    let (head, cut, tail) = (
        &text[..head_end],
        &text[head_end..tail_start],
        &text[tail_start..],
    );
    let marker = cut_marker(
        cut.len(),
        cut.matches('\n').count(),
        !head.is_empty() && !head.ends_with('\n'),
    );
    format!("{head}{marker}{tail}")
}

/// The end of `text`, at most `max_bytes` of it, starting on a character.
pub fn last_bytes(text: &str, max_bytes: usize) -> &str {
    &text[ceil_char_boundary(text, text.len().saturating_sub(max_bytes))..]
}

/// `text` without NUL bytes: Postgres refuses them in text, and they have no place in a report.
pub fn remove_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', ""))
    } else {
        Cow::Borrowed(text)
    }
}

/// Step output fit to quote in a report: NULs removed, lines cut at [`LINE_MAX_CHARS`], then
/// kept within `max_bytes` by [`head_and_tail`].
pub fn quote_output(text: &str, max_bytes: usize) -> String {
    head_and_tail(&cut_long_lines(&remove_nul(text)), max_bytes)
}

/// A comment, check-run summary or pull request body GitHub accepts: NULs removed, within
/// [`GITHUB_BODY_MAX`].
pub fn github_body(text: &str) -> String {
    head_and_tail(&remove_nul(text), GITHUB_BODY_MAX)
}

/// `text` as a one-line title of at most `max_chars` characters: control characters (line
/// breaks, NULs) become spaces and an over-long title ends in "…".
pub fn title(text: &str, max_chars: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.chars().count() <= max_chars {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(max_chars.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

fn cut_marker(bytes: usize, lines: usize, after_partial_line: bool) -> String {
    let newline = if after_partial_line { "\n" } else { "" };
    format!("{newline}[… {bytes} bytes ({lines} lines) cut …]\n")
}

// `str::floor_char_boundary` and `ceil_char_boundary` need Rust 1.91; the crate supports 1.88.
fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// Where the head ends: after the last line end in its second half, if any, else `end`.
fn head_end(text: &str, end: usize) -> usize {
    match text[..end].rfind('\n') {
        Some(newline) if newline + 1 >= end / 2 => newline + 1,
        _ => end,
    }
}

/// Where the tail starts: after the first line end in its first half, if any, else `start`.
fn tail_start(text: &str, start: usize) -> usize {
    let half = (text.len() - start) / 2;
    match text[start..].find('\n') {
        Some(offset) if offset < half => start + offset + 1,
        _ => start,
    }
}

fn cut_long_lines(text: &str) -> Cow<'_, str> {
    // A line of at most LINE_MAX_CHARS bytes has at most as many characters.
    if text
        .split_inclusive('\n')
        .all(|line| line.len() <= LINE_MAX_CHARS)
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(1 << 20));
    for line in text.split_inclusive('\n') {
        let content = line.strip_suffix('\n').unwrap_or(line);
        match content.char_indices().nth(LINE_MAX_CHARS) {
            Some((end, _)) => {
                let cut = content[end..].chars().count();
                out.push_str(&content[..end]);
                out.push_str(&format!(" [… {cut} characters cut]"));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number of bytes a marker in `text` says were cut.
    fn bytes_cut(text: &str) -> usize {
        let at = text.find("[… ").expect("a cut marker") + "[… ".len();
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    }

    #[test]
    fn the_last_bytes_start_on_a_character() {
        assert_eq!(last_bytes("abc", 10), "abc");
        assert_eq!(last_bytes("abc", 2), "bc");
        assert_eq!(last_bytes("aéz", 2), "z");
        assert_eq!(last_bytes("aéz", 3), "éz");
        assert_eq!(last_bytes("abc", 0), "");
    }

    #[test]
    fn text_within_the_budget_is_kept_whole() {
        assert_eq!(head_and_tail("short\n", 6), "short\n");
        assert_eq!(head_and_tail("", 0), "");
    }

    #[test]
    fn a_long_line_keeps_its_head_and_tail_and_says_how_much_went() {
        let text = format!("{}{}", "a".repeat(50_000), "z".repeat(50_000));
        let kept = head_and_tail(&text, 10_000);
        assert!(kept.len() <= 10_000, "{}", kept.len());
        assert!(kept.starts_with("aaa") && kept.ends_with("zzz"));
        let (head, tail) = (kept.matches('a').count(), kept.matches('z').count());
        assert_eq!(bytes_cut(&kept), text.len() - head - tail);
        assert!(tail > head, "the end gets the larger share: {head} {tail}");
    }

    #[test]
    fn many_lines_are_cut_between_lines() {
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        let kept = head_and_tail(&text, 20_000);
        assert!(kept.len() <= 20_000);
        assert!(kept.starts_with("line 0\n") && kept.ends_with("line 99999\n"));
        for line in kept.lines() {
            assert!(
                line.starts_with("line ") || line.starts_with("[… "),
                "a line was split: {line:?}"
            );
        }
        assert!(kept.contains("lines) cut …]\n"), "{kept}");
        assert!(kept.lines().count() > 1_000);
    }

    #[test]
    fn multibyte_characters_are_never_split_whatever_the_budget() {
        let text = "é😀a".repeat(5_000);
        for max in (0..400).chain([4_095, 4_096, 4_097, 10_001]) {
            let kept = head_and_tail(&text, max);
            assert!(kept.len() <= max, "{max}: {}", kept.len());
        }
        let kept = head_and_tail(&text, 1_000);
        assert!(kept.starts_with('é') && kept.ends_with('a'));
    }

    #[test]
    fn a_budget_too_small_for_the_marker_keeps_the_end() {
        let kept = head_and_tail("0123456789", 4);
        assert_eq!(kept, "6789");
        assert_eq!(head_and_tail("ab😀", 3), "");
    }

    #[test]
    fn quoted_output_loses_nuls_and_the_middle_of_long_lines() {
        let text = format!("ok\0\n{}\nend\n", "é".repeat(100_000));
        let quoted = quote_output(&text, 60_000);
        assert!(!quoted.contains('\0'));
        let lines: Vec<&str> = quoted.lines().collect();
        assert_eq!(lines[0], "ok");
        assert_eq!(
            lines[1],
            format!("{} [… 99000 characters cut]", "é".repeat(LINE_MAX_CHARS))
        );
        assert_eq!(lines[2], "end");
        assert!(quote_output(&"x\n".repeat(1_000_000), 30_000).len() <= 30_000);
    }

    #[test]
    fn github_bodies_fit_githubs_limit() {
        let body = github_body(&format!("<!-- m -->\n{}", "😀\0".repeat(100_000)));
        assert!(body.chars().count() <= GITHUB_BODY_MAX);
        assert!(body.len() <= GITHUB_BODY_MAX);
        assert!(body.starts_with("<!-- m -->\n") && !body.contains('\0'));
        assert_eq!(github_body("fine"), "fine");
    }

    #[test]
    fn titles_are_one_line_and_bounded() {
        assert_eq!(title("  Fix\nthe\0build \r\n", 256), "Fix the build");
        let long = title(&"ü".repeat(300), GITHUB_TITLE_MAX_CHARS);
        assert_eq!(long.chars().count(), GITHUB_TITLE_MAX_CHARS);
        assert!(long.ends_with("ü…"));
        assert_eq!(title("exactly", 7), "exactly");
        assert_eq!(title("word word", 6), "word…");
    }
}
