//! Headless Chromium (Debian's `chromium` and `chromium-driver`, installed by `.ci/run`)
//! driven over WebDriver, for the tests of what a person sees and clicks on the pages.
//! Included by the test files that drive a browser (`#[path]`), not by every test binary;
//! each of those uses only some of the helpers.
#![allow(dead_code)]

use std::process::Stdio;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::support::{API_TOKEN, wait_until};

/// One browser at a time: the tests' timings hold on two cores, and CI stays short.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Chromium behind a chromedriver this test started on a free port. Dropping it kills the
/// driver's process group, the browser with it, even when the test failed half-way.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    _alone: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    pub async fn start() -> Browser {
        let alone = ONE_BROWSER.lock().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver, installed by .ci/run)");
        wait_until("chromedriver listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,900"],
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Browser {
            client,
            driver,
            _alone: alone,
        }
    }

    /// Opens `path`; without a session the page sends the browser to the sign-in form,
    /// which is filled in with the operator token and brings it back.
    pub async fn sign_in_to(&self, base: &str, path: &str) {
        self.client.goto(&format!("{base}{path}")).await.unwrap();
        let url = self.client.current_url().await.unwrap();
        assert_eq!(url.path(), "/signin", "{url}");
        let token = self.client.find(Locator::Id("token")).await.unwrap();
        token.send_keys(API_TOKEN).await.unwrap();
        self.client
            .find(Locator::Css("form[action='/signin'] button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for_path(path.split('?').next().unwrap()).await;
    }

    pub async fn wait_for_path(&self, path: &str) {
        wait_until(&format!("the browser at {path}"), || async {
            let url = self.client.current_url().await.unwrap();
            (url.path() == path).then_some(())
        })
        .await;
    }

    pub async fn text_of(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    pub async fn close(mut self) {
        self.client.clone().close().await.unwrap();
        self.driver.kill().await.unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            // SAFETY: signals the process group this test started; nothing else is in it.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }
}
