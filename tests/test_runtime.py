"""The runtime on a tiny random-weight Llama over SmolLM2's real tokenizer: KV cache reuse, chat
rendering, stop-phrase rollback, nested-query unwinding, loops, sampling, the function form and F."""

from __future__ import annotations

import asyncio

import pytest
import torch
from counting import CountingModel

import querylm
from querylm.backends.local import LocalBackend
from querylm.backends.models import resolve


@pytest.fixture(scope="module")
def tokenizer():
    return resolve("random").tokenizer


@pytest.fixture()
def tiny(tokenizer) -> LocalBackend:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    return LocalBackend("tiny", CountingModel(model), tokenizer)


def test_kv_cache_feeds_every_token_once(tiny: LocalBackend):
    q = """
"Q: name three colours.\\n"
for i in range(3):
    "- [C]\\n" where len(TOKENS(C)) == 3
"Done: [END]" where len(TOKENS(END)) == 2
"""
    r = querylm.run(q, model=tiny, chat=False)
    assert len(r.holes) == 4
    fed = tiny.model.fed  # type: ignore[attr-defined]
    assert [h.tokens for h in r.holes] == [3, 3, 3, 2]
    assert len(fed) > 4
    # Each forward pass is fed only what is new: the total fed never exceeds the final sequence by more
    # than the tokens the model saw and the hole then ended on (EOS is never appended).
    total_tokens = len(tiny.encode(r.prompt))
    assert sum(fed) <= total_tokens + len(r.holes)
    assert max(fed) < total_tokens  # no pass re-encodes the whole prompt


def test_chat_role_tags_render_the_models_template(tiny: LocalBackend, tokenizer):
    r = querylm.run(
        '"{:system} Be brief.{:user} Say hi.{:assistant}[A]" where len(TOKENS(A)) < 3', model=tiny
    )
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert r.messages[:2] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi."},
    ]
    assert r.messages[2]["role"] == "assistant" and r.messages[2]["content"] == r.variables["A"]
    first_pass = tiny.model.inputs[0]  # type: ignore[attr-defined]
    assert tokenizer.decode(first_pass) == expected


def test_implicit_chat_and_raw_mode(tiny: LocalBackend):
    r = querylm.run('"Q: capital of France?\\nA: [A]" where len(TOKENS(A)) < 3', model=tiny)
    assert r.messages[0] == {"role": "user", "content": "Q: capital of France?\nA:"}
    assert r.messages[1]["role"] == "assistant"
    tiny.model.inputs.clear()  # type: ignore[attr-defined]
    raw = querylm.run('"Q: capital of France?\\nA: [A]" where len(TOKENS(A)) < 3', model=tiny, chat=False)
    assert raw.messages == []
    assert tiny.decode(tiny.model.inputs[0]) == "Q: capital of France?\nA: "  # type: ignore[attr-defined]
    assert raw.prompt.startswith("Q: capital of France?\nA: ")


def test_stops_before_drops_the_phrase_from_value_and_prompt():
    q = '"List: [X]" where STOPS_BEFORE(X, "e") and len(TOKENS(X)) < 40'
    for seed in range(5):
        backend = resolve("random", seed=seed)
        r = querylm.run(q, model=backend, chat=False)
        x = r.variables["X"]
        assert "e" not in x
        assert r.prompt == "List: " + x


def test_nested_query_unwinds_its_prompt():
    @querylm.query
    def inner():
        """lmql
        "Think: [T]" where len(TOKENS(T)) < 5
        return "42"
        """

    r = querylm.run('"Answer: [A: inner] and [B]" where len(TOKENS(B)) < 3', inner=inner, model="random")
    assert r.variables["A"] == "42"
    assert r.prompt.startswith("Answer: 42 and ")
    assert "Think:" not in r.prompt
    assert [h.name for h in r.holes] == ["A", "B"]


def test_loops_bind_each_value_and_keep_the_last():
    r = querylm.run(
        """
items = []
for i in range(3):
    "{i}. [N]\\n" where INT(N) and len(TOKENS(N)) < 3
    items.append(N)
return items
""",
        model="random",
    )
    values = [h.value for h in r.holes]
    assert r.return_value == values and all(isinstance(v, int) for v in values)
    assert r.variables["N"] == values[-1]


def test_sample_n_is_reproducible_and_returns_a_list():
    q = 'sample(n=3, seed=7, temperature=1.2)\n    "Fruit: [F]" where len(TOKENS(F)) < 4'
    a = querylm.run(q, model="random")
    b = querylm.run(q, model="random")
    assert isinstance(a, list) and len(a) == 3
    assert [r.variables for r in a] == [r.variables for r in b]
    assert len({r.variables["F"] for r in a}) > 1


def test_run_n_always_returns_the_list_run_returns():
    sampled = 'sample(n=3, seed=7, temperature=1.2)\n    "Fruit: [F]" where len(TOKENS(F)) < 4'
    many = querylm.run_n(sampled, model="random")
    assert [r.variables for r in many] == [r.variables for r in querylm.run(sampled, model="random")]
    assert len(many) == 3
    one = querylm.run_n('"Fruit: [F]" where len(TOKENS(F)) < 4', model="random")
    assert [type(r) for r in one] == [querylm.QueryResult]
    assert one[0].variables == querylm.run('"Fruit: [F]" where len(TOKENS(F)) < 4', model="random").variables
    again = asyncio.run(querylm.arun_n(sampled, model="random"))
    assert [r.variables for r in again] == [r.variables for r in many]


def test_function_form_sync_async_and_return():
    @querylm.query(model="random")
    def words(topic: str):
        """lmql
        "Topic: {topic}\\nWords: [W]" where len(WORDS(W)) < 4 and len(TOKENS(W)) < 8
        return W.split()
        """

    @querylm.query(model="random")
    async def plain(topic: str):
        """lmql
        "Topic: {topic}: [W]" where len(TOKENS(W)) < 3
        """

    out = words("cats")
    assert isinstance(out, list) and len(out) < 4
    result = asyncio.run(plain("dogs"))
    assert isinstance(result, querylm.QueryResult)
    assert result.prompt.startswith("Topic: dogs: ")


def test_F_returns_the_hole_value():
    f = querylm.F("Number for {thing}: [N]", "INT(N) and len(TOKENS(N)) < 4", model="random")
    value = f(thing="cats")
    assert isinstance(value, int)


def test_arun_matches_run():
    q = '"x: [X]" where len(TOKENS(X)) < 4'
    assert asyncio.run(querylm.arun(q, model="random")).variables == querylm.run(q, model="random").variables


def test_max_len_ends_a_free_hole_but_never_an_incomplete_value():
    r = querylm.run('"Text: [T]"', model="random", max_len=20, chat=False)
    assert r.holes[0].ended_by == "max_len"
    with pytest.raises(querylm.ConstraintError, match="max_len"):
        querylm.run('"Text: [T]" where len(T) > 500', model="random", max_len=20, chat=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_default_model_on_gpu():
    r = querylm.run('"Q: What is 2+2?\\nA: [N]" where INT(N) and len(TOKENS(N)) < 4', device="cuda")
    assert isinstance(r.variables["N"], int)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "query",
    [
        'beam(n=3)\n    "Q: Name a colour.\\nA: [C]" where len(TOKENS(C)) < 6 and STOPS_AT(C, ".")',
        'argmax\n    "Give Paris as JSON: [J]" where REGEX(J, r"\\{"city": "[A-Z][a-z]+", "country": "[A-Z][a-z]+"\\}") and len(TOKENS(J)) < 40',
    ],
)
def test_gpu_forward_passes_overlapping_the_masks_change_nothing(query: str):
    """On CUDA the forward pass is launched before the masks are computed (``overlap``): same values as
    computing them one after the other."""
    overlapped = resolve(None, device="cuda", dtype="float32")
    assert overlapped.overlap
    plain = LocalBackend("plain", overlapped.model, overlapped.tokenizer)  # type: ignore[attr-defined]
    plain.overlap = False
    a = querylm.run(query, model=overlapped, chat=False)
    b = querylm.run(query, model=plain, chat=False)
    a, b = (a if isinstance(a, list) else [a]), (b if isinstance(b, list) else [b])
    assert [r.variables for r in a] == [r.variables for r in b]


def test_local_sequence_truncation_keeps_the_cache_consistent(tiny: LocalBackend):
    """Cropping a transformers cache back into the prompt (nested queries, STOPS_BEFORE) must give the
    logits a fresh sequence would."""
    s = tiny.new_sequence()
    s.append(tiny.encode("Hello world, this is a test"))
    s.logits()
    s.truncate(2)
    s.append(tiny.encode(" there"))
    fresh = tiny.new_sequence()
    fresh.append(tiny.encode("Hello world, this is a test")[:2] + tiny.encode(" there"))
    assert abs(s.logits() - fresh.logits()).max() < 1e-4


def test_nested_query_on_a_local_model_unwinds_the_cache(tiny: LocalBackend):
    @querylm.query
    def inner():
        """lmql
        "Think: [T]" where len(TOKENS(T)) == 3
        return "ok"
        """

    r = querylm.run(
        '"Answer: [A: inner] then [B]" where len(TOKENS(B)) == 2', inner=inner, model=tiny, chat=False
    )
    assert r.prompt.startswith("Answer: ok then ")
    assert "Think" not in r.prompt and [h.name for h in r.holes] == ["A", "B"]
    # The pass that fed the text after the nested query starts right after "Answer: ": it re-fed "ok
    # then " over the cropped cache instead of continuing after "Think: ...".
    after = [tiny.decode(ids) for ids in tiny.model.inputs]  # type: ignore[attr-defined]
    assert any(chunk.startswith("ok then") for chunk in after)


def test_encoding_from_many_threads_keeps_special_tokens_apart():
    """transformers applies split_special_tokens by setting it on the shared Rust tokenizer for the
    call: threads encoding at once (run_many on threads, map, an MCP server) tokenized a chat template's
    <|im_start|> as text, so a row's prompt and value changed. Each thread must get what it asked for."""
    from concurrent.futures import ThreadPoolExecutor

    backend = resolve("random")
    text = "<|im_start|>user\nSay fig:<|im_end|>\n"
    special, plain = backend.encode(text, special=True), backend.encode(text)
    assert special != plain and special[0] == backend.tokenizer.convert_tokens_to_ids("<|im_start|>")

    def one(i: int) -> bool:
        return backend.encode(text, special=i % 2 == 0) == (special if i % 2 == 0 else plain)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(4000)))
