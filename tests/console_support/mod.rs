//! Helpers of the console tests: `arbiter serve --http` on a free loopback
//! port, tokens made with the binary's own `token create`, an MCP client with
//! an agent token, and a person's browser played by reqwest (cookies and
//! forms by hand, redirects not followed).
#![allow(dead_code)]

use rmcp::ServiceExt;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

use super::common::HttpClient;

/// rmcp's streamable HTTP client with an agent token.
pub async fn agent_client(url: &str, token: &str) -> HttpClient {
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_string())
        .auth_header(token.to_string());
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("console-test-agent", "1"),
    )
    .serve(StreamableHttpClientTransport::from_config(config))
    .await
    .expect("the MCP client connects")
}

/// A response as the test reads it.
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

pub fn assert_security_headers(r: &Resp) {
    let csp = r.header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("referrer-policy"), "same-origin");
    assert_eq!(r.header("x-frame-options"), "DENY");
}

/// A person's browser: keeps cookies, never follows redirects.
pub struct Person {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Person {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Resp {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !set.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
        Resp {
            status,
            headers,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    /// POST a form as given, with extra headers.
    pub async fn post_raw(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        self.finish(response).await
    }

    /// POST a form of a signed-in page, with the session's CSRF token.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let csrf = self.csrf().await;
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all, &[]).await
    }

    /// The CSRF token the overrides page's forms carry.
    pub async fn csrf(&mut self) -> String {
        let page = self.get("/ui/overrides").await;
        csrf_in(&page.body)
    }

    /// Open the sign-in form and submit `token`.
    pub async fn login(&mut self, token: &str) -> Resp {
        let form = self.get("/ui/login").await;
        let csrf = csrf_in(&form.body);
        self.post_raw("/ui/login", &[("csrf", &csrf), ("token", token)], &[])
            .await
    }
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_in(body: &str) -> String {
    let at = body
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no CSRF field in {body}"));
    let rest = &body[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}
