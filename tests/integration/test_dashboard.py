"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a real
`meshgate up` with real traffic: the graph, live rates, a weight changed from the page and
measured by a client, a conflicting change, the token prompt, a phone's width, and no request
to any other host."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.integration.conftest import Node, count_served, quote
from tests.integration.discovery_helpers import Demos
from tests.integration.haproxy_helpers import free_port

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium asks Google's hosts for updates and the like unless told not to; the machine's
# network refuses them, and the test counts every request the page makes.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page whose console errors, failed loads and requested URLs are recorded."""

    def __init__(self, browser: Browser, width: int = 1280, height: int = 800) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.urls.append(request.url))

    def _console(self, message: ConsoleMessage) -> None:
        # A 401 before the token is given is the API's answer, not an error of the page.
        if message.type == "error" and "401" not in message.text:
            self.errors.append(message.text)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser: Browser) -> Iterator[Callable[..., Watched]]:
    pages: list[Watched] = []

    def make(width: int = 1280, height: int = 800) -> Watched:
        pages.append(Watched(browser, width, height))
        return pages[-1]

    yield make
    for page in pages:
        page.close()


def sava(node: Node, demos: Demos) -> int:
    """The demo's two versions behind a 90/10 gateway `sava` on a free port."""
    stable, _ = demos.start("sava 1.0")
    canary, _ = demos.start("sava 1.1")
    port = free_port()
    node.apply(
        {"kind": "service", "name": "sava:1.0", "instances": [f"127.0.0.1:{stable}"]},
        {"kind": "service", "name": "sava:1.1", "instances": [f"127.0.0.1:{canary}"]},
        {
            "name": "sava",
            "port": f"{port}/http",
            "routes": {"sava:1.0": {"weight": "90%"}, "sava:1.1": {"weight": "10%"}},
        },
    )
    return port


def only_local(urls: list[str], node: Node) -> list[str]:
    """The URLs requested of any other host than the node's API (must be none)."""
    return [u for u in urls if not u.startswith(node.url + "/") and not u.startswith("data:")]


def label(page: Page, route: str) -> str:
    return page.locator(f'svg.graph text.label[data-route="{route}"]').text_content() or ""


def test_graph_shows_the_routes_and_their_live_traffic(
    make_node: Callable[..., Node], demos: Demos, watched: Callable[..., Watched]
) -> None:
    node = make_node()
    port = sava(node, demos)
    shown = watched()
    shown.page.goto(f"{node.url}/ui/")
    # (A straight path has no height: Playwright does not count it as visible.)
    shown.page.wait_for_selector('svg.graph path[data-route="sava:1.1"]', state="attached")
    assert label(shown.page, "sava:1.0").startswith("90% · ")
    assert label(shown.page, "sava:1.1").startswith("10% · ")
    gateway = shown.page.locator('svg.graph g.node.gateway[data-id="gateway:default/sava"]')
    assert "sava" in (gateway.text_content() or "")
    before = shown.page.locator("svg.graph g.node").count()
    with httpx.Client(timeout=5) as client:
        for _ in range(300):
            client.get(f"http://127.0.0.1:{port}/")
    # The labels follow the traffic within a refresh or two: the stable route carries most.
    shown.page.wait_for_function(
        """() => {
            const text = document.querySelector('svg.graph text.label[data-route="sava:1.0"]');
            const rate = text && /· ([0-9.]+)\\/s/.exec(text.textContent);
            return rate && parseFloat(rate[1]) > 0;
        }""",
        timeout=15_000,
    )
    assert shown.page.locator("svg.graph g.node").count() == before  # nothing re-laid out
    assert shown.errors == []
    assert only_local(shown.urls, node) == []


def test_a_weight_set_from_the_page_changes_the_split(
    make_node: Callable[..., Node], demos: Demos, watched: Callable[..., Watched]
) -> None:
    node = make_node()
    port = sava(node, demos)
    shown = watched()
    shown.page.goto(f"{node.url}/ui/#/gateways/default/sava")
    weight = shown.page.locator('input[data-route="sava:1.1"]')
    weight.wait_for()
    assert weight.input_value() == "10"
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    shown.page.on("dialog", accept)
    weight.fill("50")
    shown.page.locator('button[data-route="sava:1.1"]').click()
    shown.page.wait_for_selector("text=Weights set")
    assert dialogs == ["Set the weights of sava to sava:1.0 50%, sava:1.1 50%?"]
    node.wait_applied("gateways", "sava")
    served = count_served(f"http://127.0.0.1:{port}/", 300)
    assert 0.38 <= served.get("sava 1.1", 0) / 300 <= 0.62, served
    assert shown.errors == []


def test_a_conflicting_change_shows_the_new_state_instead_of_overwriting_it(
    make_node: Callable[..., Node], demos: Demos, watched: Callable[..., Watched]
) -> None:
    node = make_node()
    sava(node, demos)
    shown = watched()
    shown.page.goto(f"{node.url}/ui/#/gateways/default/sava")
    weight = shown.page.locator('input[data-route="sava:1.1"]')
    weight.wait_for()
    weight.fill("70")  # typed, and meanwhile someone else writes the gateway
    document = node.get("gateways", "sava")
    for field in ("version", "status"):
        document.pop(field)
    document["routes"] = {"sava:1.0": {"weight": 75}, "sava:1.1": {"weight": 25}}
    response = node.api.put(f"/api/v1/gateways/{quote('sava')}", json=document)
    assert response.status_code == 200, response.text
    shown.page.on("dialog", lambda dialog: dialog.accept())
    shown.page.locator('button[data-route="sava:1.1"]').click()
    shown.page.wait_for_selector("text=was changed by someone else meanwhile")
    shown.page.wait_for_function(
        """() => document.querySelector('input[data-route="sava:1.1"]').value === "25" """
    )
    routes = node.get("gateways", "sava")["routes"]
    assert (routes["sava:1.0"]["weight"], routes["sava:1.1"]["weight"]) == (75, 25)


def test_the_page_asks_for_the_token_and_keeps_it_for_the_tab(
    make_node: Callable[..., Node], demos: Demos, watched: Callable[..., Watched]
) -> None:
    node = make_node("--token", "s3cret-token")
    node.api.headers["Authorization"] = "Bearer s3cret-token"
    sava(node, demos)
    shown = watched()
    shown.page.goto(f"{node.url}/ui/")
    shown.page.wait_for_selector("#token-dialog[open]")
    shown.page.fill("#token-input", "s3cret-token")
    shown.page.click("#token-submit")
    shown.page.wait_for_selector('svg.graph path[data-route="sava:1.0"]', state="attached")
    assert shown.page.evaluate("sessionStorage.getItem('meshgate-token')") == "s3cret-token"
    assert shown.page.evaluate("localStorage.length") == 0
    assert shown.errors == []


def test_api_errors_read_as_messages(
    make_node: Callable[..., Node], watched: Callable[..., Watched]
) -> None:
    node = make_node()
    shown = watched()
    shown.page.goto(f"{node.url}/ui/#/gateways/default/nothing-here")
    banner = shown.page.locator("#banner")
    banner.wait_for(state="visible")
    assert banner.inner_text() == "gateway default/nothing-here not found"
    assert shown.page.locator("h1").inner_text() == "Gateway nothing-here"


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (390, 844)])
def test_every_view_renders_at_desktop_and_phone_width(
    make_node: Callable[..., Node],
    demos: Demos,
    watched: Callable[..., Watched],
    width: int,
    height: int,
) -> None:
    node = make_node()
    sava(node, demos)
    node.apply(
        {
            "kind": "rollout",
            "name": "sava",
            "gateway": "sava",
            "canary": "sava:1.1",
            "steps": ["20%", "100%"],
            "interval": "60s",
        }
    )
    shown = watched(width, height)
    checks = {
        "": 'svg.graph text.label[data-route="sava:1.0"]',
        "gateways": "text=sava",
        "gateways/default/sava": 'input[data-route="sava:1.0"]',
        "services": "text=sava:1.1",
        "rollouts": "text=Progressing",
        "events": "h1",
    }
    for path, selector in checks.items():
        shown.page.goto(f"{node.url}/ui/#/{path}")
        shown.page.wait_for_selector(selector)
        shown.page.wait_for_timeout(300)
        overflow = shown.page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width + 1, (path, overflow)
        assert not shown.page.locator("#banner").is_visible(), shown.page.locator("#banner")
    assert shown.errors == []
    assert only_local(shown.urls, node) == []
    assert f"{node.url}/ui/app.js" in shown.urls


def test_a_rollout_is_started_paused_resumed_and_aborted_from_the_page(
    make_node: Callable[..., Node], demos: Demos, watched: Callable[..., Watched]
) -> None:
    node = make_node()
    sava(node, demos)
    shown = watched()
    shown.page.goto(f"{node.url}/ui/#/rollouts")
    form = shown.page.locator("#rollout-form")
    form.locator('input[name="name"]').fill("sava")
    form.locator('input[name="gateway"]').fill("sava")
    form.locator('input[name="canary"]').fill("sava:1.1")
    form.locator('input[name="steps"]').fill("20%, 100%")
    form.locator('input[name="interval"]').fill("60s")
    form.locator("button").click()
    row = shown.page.locator("tbody tr", has_text="sava:1.1")
    row.locator("span.Progressing").wait_for()
    for action, phase in (("Pause", "Paused"), ("Resume", "Progressing"), ("Abort", "Failed")):
        row.locator(f"button:has-text('{action}')").click()
        row.locator(f"span.{phase}").wait_for()
        assert node.get("rollouts", "sava")["status"]["phase"] == phase
    routes = node.get("gateways", "sava")["routes"]
    assert routes["sava:1.1"]["weight"] == 0
    form.locator('input[name="name"]').fill("broken")
    form.locator('input[name="gateway"]').fill("nowhere")
    form.locator('input[name="canary"]').fill("sava:1.1")
    form.locator("button").click()
    banner = shown.page.locator("#banner")
    banner.wait_for(state="visible")
    assert banner.inner_text() == "gateway: gateway default/nowhere does not exist"
    assert shown.errors == [] or all("422" in error for error in shown.errors)


def test_graph_shows_who_calls_a_gateway(
    make_node: Callable[..., Node], demos: Demos, watched: Callable[..., Watched]
) -> None:
    node = make_node()
    port = sava(node, demos)
    node.apply({"kind": "service", "name": "web", "instances": ["127.0.0.21:8000"]})
    shown = watched()
    shown.page.goto(f"{node.url}/ui/")
    shown.page.wait_for_selector('svg.graph path[data-route="sava:1.1"]', state="attached")
    with httpx.Client(timeout=5, transport=httpx.HTTPTransport(local_address="127.0.0.21")) as c:
        for _ in range(100):
            c.get(f"http://127.0.0.1:{port}/")
    # The calling service appears with the callers (left), joined to the gateway it calls.
    caller = 'svg.graph g.node.service[data-id="service:default/web"]'
    shown.page.wait_for_selector(caller, timeout=15_000)
    placed = shown.page.locator(caller).get_attribute("transform", timeout=1000) or ""
    assert placed.startswith("translate(10,"), placed
    edge = 'svg.graph path[data-id="service:default/web->gateway:default/sava#"]'
    shown.page.wait_for_selector(edge, state="attached", timeout=5_000)
    assert "/s" in (shown.page.locator(edge).text_content() or "")
    assert shown.errors == []
