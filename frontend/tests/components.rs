//! Component tests, run in headless Chromium by wasm-bindgen-test-runner:
//! `CHROMEDRIVER=/usr/bin/chromedriver cargo test -p roundtable-frontend --target wasm32-unknown-unknown`
//! (browser flags in `frontend/webdriver.json`).
#![cfg(target_arch = "wasm32")]

use roundtable_frontend::api::{ApiError, Remote};
use roundtable_frontend::components::{Header, HeaderProps, ServerStatus, ServerStatusProps};
use roundtable_shared::api::Health;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::Element;
use yew::{AttrValue, BaseComponent};

wasm_bindgen_test_configure!(run_in_browser);

/// A fresh `<div>` attached to the document.
fn mount_point() -> Element {
    let doc = web_sys::window().unwrap().document().unwrap();
    let div = doc.create_element("div").unwrap();
    doc.body().unwrap().append_child(&div).unwrap();
    div
}

/// Renders `C` with `props` into a fresh div and returns the div once Yew has rendered.
async fn render<C: BaseComponent>(props: C::Properties) -> Element {
    let root = mount_point();
    yew::Renderer::<C>::with_root_and_props(root.clone(), props).render();
    yew::scheduler::flush().await;
    root
}

fn text_of(root: &Element, selector: &str) -> Option<String> {
    root.query_selector(selector)
        .unwrap()
        .and_then(|e| e.text_content())
}

#[wasm_bindgen_test]
async fn ready_shows_name_and_version() {
    let health = Health {
        name: "roundtable".into(),
        version: "9.8.7".into(),
    };
    let root = render::<ServerStatus>(ServerStatusProps {
        health: Remote::Ready(health),
        on_retry: Default::default(),
    })
    .await;
    assert_eq!(text_of(&root, "#version").as_deref(), Some("9.8.7"));
    assert_eq!(text_of(&root, "#name").as_deref(), Some("roundtable"));
    assert!(root.query_selector(".loading").unwrap().is_none());
}

#[wasm_bindgen_test]
async fn loading_says_so() {
    let root = render::<ServerStatus>(ServerStatusProps {
        health: Remote::Loading,
        on_retry: Default::default(),
    })
    .await;
    assert_eq!(text_of(&root, "[role=status]").as_deref(), Some("loading…"));
    assert!(root.query_selector("#version").unwrap().is_none());
}

#[wasm_bindgen_test]
async fn failure_explains_and_offers_retry() {
    let root = render::<ServerStatus>(ServerStatusProps {
        health: Remote::Failed(ApiError::Status {
            status: 502,
            text: "Bad Gateway".into(),
        }),
        on_retry: Default::default(),
    })
    .await;
    let alert = text_of(&root, "[role=alert]").unwrap();
    assert!(
        alert.contains("the server answered 502 Bad Gateway"),
        "{alert}"
    );
    assert_eq!(text_of(&root, "button").as_deref(), Some("Retry"));
}

#[wasm_bindgen_test]
async fn header_shows_product_and_version() {
    let root = render::<Header>(HeaderProps {
        version: Some(AttrValue::from("1.2.3")),
    })
    .await;
    assert_eq!(text_of(&root, "h1").as_deref(), Some("Roundtable"));
    assert_eq!(text_of(&root, ".pill").as_deref(), Some("v1.2.3"));
}
