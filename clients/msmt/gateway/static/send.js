// The send form's live preflight: on every change, the form goes to /inbox/send/preflight
// (the checks a TAXII POST runs before sealing) and the answer is shown beside it.
// Text only (textContent), never HTML; nothing is fetched from anywhere but the gateway.
(function () {
  "use strict";
  var form = document.getElementById("send-form");
  var out = document.getElementById("preflight");
  if (!form || !out) {
    return;
  }
  var url = form.getAttribute("data-preflight");
  var timer = null;
  var inflight = null;
  var asked = 0;

  function line(parent, tag, text, id, cls) {
    var el = document.createElement(tag);
    el.textContent = text;
    if (id) {
      el.id = id;
    }
    if (cls) {
      el.className = cls;
    }
    parent.appendChild(el);
    return el;
  }

  function show(state, title) {
    out.className = "preflight preflight-" + state;
    out.setAttribute("data-state", state);
    out.replaceChildren();
    line(out, "p", title, "preflight-title", "preflight-title");
    return out;
  }

  function render(answer) {
    if (answer.ok) {
      show("ok", "Ready to send as " + answer.banner);
      var facts = line(out, "dl", "", "", "facts");
      line(facts, "dt", "TLP", "", "");
      var tlp = line(facts, "dd", "", "", "");
      var badge = line(tlp, "span", "TLP:" + answer.tlp, "preflight-tlp",
        "tlp tlp-" + answer.tlp.toLowerCase().replace("+", "-"));
      badge.setAttribute("data-tlp", answer.tlp);
      line(tlp, "div", answer.tlp_source, "", "small muted");
      line(facts, "dt", "Recipients", "", "");
      var who = line(facts, "dd", answer.recipients ? answer.recipients.join(", ") : "not known yet",
        "preflight-recipients", "");
      line(who, "div", answer.recipients_note || "", "", "small muted");
      if (answer.format === "stix") {
        line(facts, "dt", "STIX objects", "", "");
        line(facts, "dd", String(answer.objects), "preflight-objects", "");
      }
      line(facts, "dt", "Size", "", "");
      line(facts, "dd", answer.bytes + " bytes", "", "");
      return;
    }
    var error = answer.error || {};
    if (error.code === "empty") {
      show("idle", "Paste or upload what you want to send.");
      return;
    }
    show("error", "It would be refused: " + (error.message || "unknown reason"));
    if (error.object_id) {
      var object = line(out, "p", "Offending object: ", "", "");
      line(object, "span", error.object_id, "preflight-object", "mono");
    }
    if (error.recipients) {
      var list = line(out, "ul", "", "preflight-refusals", "");
      Object.keys(error.recipients).forEach(function (country) {
        line(list, "li", country + ": " + error.recipients[country], "", "");
      });
    }
    if (error.code) {
      line(out, "p", "(" + error.code + ")", "preflight-code", "small muted");
    }
  }

  function run() {
    var data = new FormData(form);
    var text = data.get("content") || "";
    var file = data.get("file");
    if (!String(text).trim() && !(file && file.size)) {
      show("idle", "Paste or upload what you want to send.");
      return;
    }
    if (inflight) {
      inflight.abort();
    }
    inflight = new AbortController();
    var mine = ++asked;
    show("busy", "Checking…");
    fetch(url, {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": String(data.get("csrf") || "") },
      signal: inflight.signal,
    })
      .then(function (response) {
        return response.json();
      })
      .then(function (answer) {
        if (mine === asked) {
          render(answer);
        }
      })
      .catch(function (err) {
        if (err && err.name === "AbortError") {
          return;
        }
        if (mine === asked) {
          show("error", "The preflight could not run: " + err);
        }
      });
  }

  function soon() {
    clearTimeout(timer);
    timer = setTimeout(run, 350);
  }

  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  if (document.getElementById("content").value.trim()) {
    run();
  }
})();
