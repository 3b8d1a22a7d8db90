// Sign in: the operator key goes once, in the Authorization header, to POST /v1/session,
// which answers with an HttpOnly session cookie; the key is never stored by the page.
"use strict";

const BASE = document.querySelector('meta[name="jaffnet-base"]').content;

document.getElementById("signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("key");
  const error = document.getElementById("signin-error");
  error.hidden = true;
  try {
    const answer = await fetch(BASE + "/v1/session", {
      method: "POST", headers: { Authorization: `Bearer ${input.value.trim()}` }, cache: "no-store",
    });
    if (answer.ok) {
      input.value = "";
      window.location.replace(BASE + "/");
      return;
    }
    const body = await answer.json().catch(() => ({}));
    error.textContent = (body.error && body.error.message) || `HTTP ${answer.status}`;
  } catch (failure) {
    error.textContent = `service unreachable: ${failure.message}`;
  }
  error.hidden = false;
});
