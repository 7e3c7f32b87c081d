"""The page serve.py shows at /: type German text, read the translations and their n-best lists, see the attention.

One self-contained HTML document (no external assets: it works offline),
written against serve.py's JSON API. Every control is a native form element,
reachable and usable with the keyboard (Ctrl+Enter translates), and labelled
for screen readers; the heatmap is a table whose header cells are the tokens
and whose cells say their weight; API errors appear in an alert region.
"""
import json

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>German to English</title>
<style>
  body { font: 16px/1.45 system-ui, sans-serif; margin: 0; color: #1b1b1b; background: #fafafa; }
  main { max-width: 60rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
  h1 { font-size: 1.5rem; margin: .5rem 0 1rem; }
  h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
  label { font-weight: 600; }
  textarea { display: block; width: 100%; box-sizing: border-box; font: inherit; padding: .5rem; margin: .3rem 0; }
  .options { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; margin: .5rem 0 1rem; }
  .options input { width: 4rem; font: inherit; margin-left: .3rem; }
  button { font: inherit; padding: .45rem 1.1rem; cursor: pointer; }
  :focus-visible { outline: 3px solid #1a5fb4; outline-offset: 2px; }
  .hint { color: #555; font-size: .9rem; margin: 0; }
  #error { background: #fde8e8; border-left: 4px solid #c01c28; padding: .6rem .8rem; }
  #status { color: #555; min-height: 1.4em; }
  article { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .7rem 1rem; margin: .8rem 0; }
  article h3 { font-size: .95rem; margin: 0 0 .3rem; color: #555; }
  .source { margin: 0 0 .5rem; font-style: italic; }
  fieldset { border: 0; padding: 0; margin: 0; }
  legend { font-weight: 600; margin-bottom: .2rem; }
  .hypothesis { display: block; padding: .15rem 0; }
  .score { color: #555; font-variant-numeric: tabular-nums; margin-left: .5rem; font-size: .9rem; }
  .controls { display: flex; gap: 1rem; align-items: center; margin: .5rem 0; }
  select { font: inherit; margin-left: .3rem; }
  .scroll { overflow-x: auto; }
  table { border-collapse: collapse; font-size: .85rem; }
  th { font-weight: 500; padding: 2px 4px; white-space: nowrap; }
  thead th { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; vertical-align: bottom; }
  tbody th { text-align: right; }
  td { width: 1.6rem; height: 1.6rem; border: 1px solid #eee; }
  .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
</style>
</head>
<body>
<main>
<h1>German to English</h1>
<form id="form">
  <label for="source">German text, one sentence per line</label>
  <textarea id="source" rows="5" aria-describedby="limits" spellcheck="false"></textarea>
  <p id="limits" class="hint"></p>
  <div class="options">
    <label for="beam">Beam size<input id="beam" type="number" min="1"></label>
    <label for="nbest">Translations per sentence<input id="nbest" type="number" min="1" value="3"></label>
  </div>
  <button id="translate" type="submit">Translate</button>
</form>
<p id="status" aria-live="polite"></p>
<p id="error" role="alert" hidden></p>
<section id="results" aria-label="Translations"></section>
<section id="attention" hidden aria-labelledby="attention-title">
  <h2 id="attention-title" tabindex="-1">Cross-attention</h2>
  <div class="controls">
    <label for="layer">Layer<select id="layer"></select></label>
    <label for="head">Head<select id="head"></select></label>
  </div>
  <p id="heatmap-about" class="hint"></p>
  <div class="scroll"><table id="heatmap" aria-describedby="heatmap-about"></table></div>
</section>
</main>
<script id="config" type="application/json">/*CONFIG*/</script>
<script>
"use strict";
const config = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
let seen = null;  // the /attention answer shown in the heatmap

$("limits").textContent = `Up to ${config.max_sentences} sentences and ${config.max_chars} characters. ` +
  "Ctrl+Enter translates.";
$("beam").value = config.beam_size;
for (const id of ["beam", "nbest"]) { $(id).max = config.max_beam_size; }

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function call(path, body) {
  let response;
  try {
    response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify(body)});
  } catch (e) {
    throw new Error("The server cannot be reached: " + e.message);
  }
  const answer = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) {
    throw new Error(answer.error || `HTTP ${response.status}`);
  }
  return answer;
}

function element(tag, properties, ...children) {
  const node = Object.assign(document.createElement(tag), properties || {});
  node.append(...children);
  return node;
}

function showTranslations(sentences, answer) {
  const results = $("results");
  results.replaceChildren(element("h2", {}, "Translations"));
  sentences.forEach((sentence, i) => {
    const group = element("fieldset", {}, element("legend", {}, "Translations, best first"));
    answer.nbest[i].forEach((hypothesis, j) => {
      const id = `hypothesis-${i}-${j}`;
      const radio = element("input", {type: "radio", name: `sentence-${i}`, id, value: String(j), checked: j === 0});
      radio.dataset.translation = hypothesis.translation;
      radio.addEventListener("change", () => { if (seen && seen.sentence === i) showAttention(i); });
      const text = element("span", {className: "translation", lang: "en"}, hypothesis.translation || "(empty)");
      const label = element("label", {htmlFor: id, className: "hypothesis"}, radio, " ", text,
                            element("span", {className: "score"}, `score ${hypothesis.score.toFixed(4)}`));
      group.append(label);
    });
    const button = element("button", {type: "button", className: "show-attention"}, "Show attention");
    button.setAttribute("aria-controls", "attention");
    button.addEventListener("click", () => showAttention(i));
    results.append(element("article", {}, element("h3", {}, `Sentence ${i + 1}`),
                           element("p", {className: "source", lang: "de"}, sentence), group, button));
  });
}

async function translate(event) {
  event.preventDefault();
  const sentences = $("source").value.split("\\n").map((s) => s.trim()).filter((s) => s);
  showError("");
  if (!sentences.length) {
    showError("Type a German sentence first.");
    return;
  }
  const beam = Number($("beam").value), nbest = Number($("nbest").value);
  $("translate").disabled = true;
  $("status").textContent = "Translating…";
  try {
    const answer = await call("/translate", {text: sentences, beam_size: beam, nbest});
    showTranslations(sentences, answer);
    $("status").textContent = `Translated ${sentences.length} sentence${sentences.length > 1 ? "s" : ""}.`;
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
  } finally {
    $("translate").disabled = false;
  }
}

async function showAttention(i) {
  const article = $("results").querySelectorAll("article")[i];
  const chosen = article.querySelector("input:checked");
  const text = article.querySelector(".source").textContent;
  showError("");
  try {
    const answer = await call("/attention", {text, translation: chosen.dataset.translation});
    seen = {...answer, sentence: i};
    fillSelect($("layer"), answer.layers, "layer", answer.layers - 1);
    fillSelect($("head"), answer.heads, "head", answer.heads);
    $("attention").hidden = false;
    drawHeatmap();
    $("attention-title").focus();
  } catch (e) {
    showError(e.message);
  }
}

function fillSelect(select, count, word, chosen) {
  const options = [...Array(count).keys()].map((k) => element("option", {value: String(k)}, `${word} ${k + 1}`));
  if (word === "head") {
    options.push(element("option", {value: String(count)}, "mean of the heads"));
  }
  select.replaceChildren(...options);
  select.value = String(chosen);
}

function drawHeatmap() {
  const layer = Number($("layer").value), head = Number($("head").value);
  const heads = seen.attention[layer];
  const weights = head < heads.length ? heads[head] : heads[0].map((row, q) => row.map((_, k) =>
    heads.reduce((sum, h) => sum + h[q][k], 0) / heads.length));
  const headName = head < heads.length ? `head ${head + 1}` : "the mean of the heads";
  const table = $("heatmap");
  $("heatmap-about").textContent = `Layer ${layer + 1}, ${headName}: how much each English token (row: the ` +
    "decoder's input at that step) attends to each German token (column); darker is more.";
  const caption = element("caption", {className: "sr"}, `Cross-attention, layer ${layer + 1}, ${headName}`);
  const header = element("tr", {}, element("td"), ...seen.source.map((token) => element("th", {scope: "col"}, token)));
  const rows = weights.map((row, q) => element("tr", {},
    element("th", {scope: "row"}, seen.target[q]),
    ...row.map((w, k) => {
      const cell = element("td", {title: w.toFixed(2)}, element("span", {className: "sr"}, w.toFixed(2)));
      cell.style.background = `rgba(26, 95, 180, ${Math.min(1, w).toFixed(3)})`;
      cell.dataset.weight = String(w);
      return cell;
    })));
  table.replaceChildren(caption, element("thead", {}, header), element("tbody", {}, ...rows));
}

$("form").addEventListener("submit", translate);
$("source").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { $("form").requestSubmit(); }
});
$("layer").addEventListener("change", drawHeatmap);
$("head").addEventListener("change", drawHeatmap);
</script>
</body>
</html>
"""


def html(**config):
    """The page with serve.py's limits and defaults (max_chars, max_sentences, max_beam_size, beam_size)."""
    return PAGE.replace("/*CONFIG*/", json.dumps(config))
