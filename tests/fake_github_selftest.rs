#[path = "support/fake_github.rs"]
mod fake_github;

#[test]
fn compiles() {}
