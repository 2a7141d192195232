"""A scientist's first visit, in Debian's headless Chromium driven by Playwright.

Real hub, real proxy, real JupyterLab with jupyterlab-h5web; screenshots are
saved under test-output/ for a person to look at.
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.hub, pytest.mark.browser]

LAB_TIMEOUT = 120_000  # ms: first JupyterLab start on 2 cores takes 10-20 s


def dir_listing(page) -> set[str]:
    page.wait_for_selector(".jp-DirListing-item", timeout=30_000)
    return set(page.locator(".jp-DirListing-item .jp-DirListing-itemText").all_inner_texts())


def open_folder(page, name: str) -> None:
    page.locator(f'.jp-DirListing-itemText >> text="{name}"').first.dblclick()
    page.wait_for_selector(f".jp-BreadCrumbs >> text={name}", timeout=30_000)


def test_login_lab_proposals_and_h5web(hub, browser, output_dir):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    outside = []
    page.on("request", lambda req: outside.append(req.url) if not req.url.startswith((hub.url, "data:", "blob:")) else None)
    try:
        page.goto(f"{hub.url}/hub/login")
        assert page.locator("#daas-demo-users").is_visible()
        page.screenshot(path=output_dir / "01-login.png")
        page.click("#daas-login-alice")
        page.wait_for_selector("#daas-options", timeout=60_000)  # the spawn form, prefilled
        assert page.locator("#daas-proposal").input_value() == "MX-1001"
        page.screenshot(path=output_dir / "01b-spawn-form.png")
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=LAB_TIMEOUT)
        page.wait_for_selector(".jp-DirListing-content", timeout=LAB_TIMEOUT)
        assert "proposals" in dir_listing(page)
        open_folder(page, "proposals")
        page.wait_for_selector(".jp-DirListing-item >> text=MX-1001", timeout=30_000)
        assert dir_listing(page) == {"MX-1001", "HC-3003", "IH-5005"}
        page.screenshot(path=output_dir / "02-proposals.png")

        open_folder(page, "MX-1001")
        open_folder(page, "raw")
        page.wait_for_selector(".jp-DirListing-item >> text=cathode_scan0001.h5", timeout=30_000)
        page.locator('.jp-DirListing-itemText >> text="cathode_scan0001.h5"').first.dblclick()
        viewer = page.locator(".jp-MainAreaWidget:visible", has_text="entry").last
        viewer.wait_for(timeout=60_000)
        page.wait_for_selector(".jp-MainAreaWidget:visible canvas, .jp-MainAreaWidget:visible [role=figure]",
                               timeout=60_000)
        page.wait_for_timeout(1500)  # let the first frame render
        page.screenshot(path=output_dir / "03-h5web.png")
    finally:
        context.close()
        hub.stop_server("alice")
    assert not outside, f"pages loaded something from outside the facility: {outside[:5]}"
