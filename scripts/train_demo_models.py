"""Build the offline demo: a generated bilingual corpus, held-out tasks and two tiny GPT-2 models.

    .venv/bin/python scripts/train_demo_models.py        # or: make models

Takes 2-5 minutes on one CPU thread (500 AdamW steps on a 0.97M-parameter model) and is deterministic
(seeded corpus, fixed data order, one thread, deterministic kernels): a rerun reproduces the committed
model.safetensors byte for byte. It writes:

- suites/data/demo_corpus.txt        training sentences, English and Chinese, one per line
- suites/data/demo_{en,zh}.jsonl     40 held-out prompts each: {"id", "prompt", "reference"}
- suites/models/demo-gpt2/           the trained model, tokenizer and generation config
- suites/models/demo-gpt2-untrained/ the same architecture and tokenizer, randomly initialised

The corpus comes from a small world of templates in which the end of each sentence follows from its
beginning (a job determines the daily activity, the weather what someone does, a shop what is bought),
so a tiny model can learn to continue a prompt. The test prompts are slot combinations that never occur
in training, so a good score needs generalisation, not recall. At the end both models are scored with
plain transformers and sacrebleu, which shows what the demo suite should reproduce.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sacrebleu
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "suites" / "data"
MODEL_DIR = ROOT / "suites" / "models"
TRAINED_DIR = MODEL_DIR / "demo-gpt2"
UNTRAINED_DIR = MODEL_DIR / "demo-gpt2-untrained"

SEED = 1234
# One thread: on this model's tiny matrices a second thread gains little on an idle machine and costs 3-5x
# on a busy one, and a fixed count keeps float reductions, hence the weights, identical on any machine.
THREADS = 1
TRAIN_PER_LANG = 8000
TEST_PER_TEMPLATE = 10  # four templates -> 40 prompts per language
VOCAB_SIZE = 2048  # an upper bound: the world's small vocabulary runs out of merges near 1,270
MAX_LEN = 128
EOT, PAD = "<|endoftext|>", "<pad>"
MODEL_SHAPE = {"n_embd": 128, "n_layer": 4, "n_head": 4}
EPOCHS = 1
BATCH_SIZE = 32
LR = 3e-3
WARMUP_STEPS = 100
MAX_NEW_TOKENS = 32

# ---------------------------------------------------------------------------------------------------
# The world. Names and cities differ per language; the other entries pair the English and the Chinese
# surface form.

NAMES = {
    "en": "Alice Bob Carol David Emma Frank Grace Henry Ivy Jack Kate Leo Mia Noah Olivia Peter Rose Sam "
    "Tom Lucy",
    "zh": "小明 小红 小华 小丽 小刚 小强 小芳 小军 李雷 韩梅梅 王芳 张伟 刘洋 陈静 杨帆 赵磊 孙悦 周杰 吴敏 "
    "郑爽",
}
CITIES = {
    "en": ["London", "Paris", "Tokyo", "Berlin", "Rome", "Madrid", "Sydney", "Toronto", "Boston", "Dublin"],
    "zh": ["北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆"],
}
DAYS = list(
    zip(
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
        ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期天"],
        strict=True,
    )
)
PARTS = [("morning", "早上"), ("afternoon", "下午"), ("evening", "晚上")]
COUNTS = [("two", "两"), ("three", "三"), ("four", "四"), ("five", "五"), ("six", "六")]

# shop -> items; the Chinese item carries its measure word.
SHOPS = [
    (
        ("market", "市场"),
        [("red apples", "个红苹果"), ("ripe bananas", "根香蕉"), ("sweet oranges", "个甜橙")],
    ),
    (("bakery", "面包店"), [("loaves of bread", "个面包"), ("chocolate cakes", "块巧克力蛋糕")]),
    (
        ("bookshop", "书店"),
        [("history books", "本历史书"), ("picture books", "本图画书"), ("old maps", "张旧地图")],
    ),
    (("flower shop", "花店"), [("yellow roses", "枝黄玫瑰"), ("white lilies", "枝白百合")]),
    (
        ("toy shop", "玩具店"),
        [("toy cars", "辆玩具车"), ("small kites", "个小风筝"), ("rubber balls", "个皮球")],
    ),
]
JOBS = [
    (("baker", "面包师"), ("bakes fresh bread for the whole town", "都为全城的人烤新鲜的面包")),
    (("teacher", "老师"), ("teaches mathematics to young children", "都给孩子们上数学课")),
    (("doctor", "医生"), ("helps sick people at the hospital", "都在医院里帮助病人")),
    (("farmer", "农民"), ("feeds the cows and waters the fields", "都喂牛，还给田地浇水")),
    (("driver", "司机"), ("drives a red bus around the city", "都开着红色的公共汽车在城里转")),
    (("painter", "画家"), ("paints pictures of the sea and the sky", "都画大海和天空")),
    (("cook", "厨师"), ("makes hot soup in a busy restaurant", "都在热闹的饭店里做热汤")),
    (("nurse", "护士"), ("takes care of patients at the clinic", "都在诊所里照顾病人")),
    (("pilot", "飞行员"), ("flies a big plane across the ocean", "都驾驶大飞机飞过大海")),
    (("engineer", "工程师"), ("builds strong bridges over the river", "都在河上修建坚固的大桥")),
]
WEATHERS = [
    (
        ("raining", "下雨了"),
        [
            ("took an umbrella to work", "带了一把伞去上班"),
            ("stayed at home and read a book", "待在家里看书"),
        ],
    ),
    (
        ("snowing", "下雪了"),
        [
            ("wore a warm coat and a hat", "穿上了厚外套，戴上了帽子"),
            ("built a snowman in the garden", "在花园里堆了一个雪人"),
        ],
    ),
    (
        ("sunny", "阳光明媚"),
        [("went for a long walk in the park", "去公园散步"), ("had a picnic by the river", "在河边野餐")],
    ),
    (
        ("windy", "刮大风"),
        [("flew a kite on the hill", "在山坡上放风筝"), ("closed all the windows", "关上了所有的窗户")],
    ),
    (
        ("very hot", "天气很热"),
        [
            ("drank cold water and ate ice cream", "喝了冰水，吃了冰淇淋"),
            ("went swimming in the lake", "去湖里游泳"),
        ],
    ),
    (
        ("foggy", "有大雾"),
        [("drove slowly and carefully", "开车开得又慢又小心"), ("waited for the fog to clear", "等着雾散去")],
    ),
]
# pet -> (English, Chinese, Chinese measure word), what it does every day.
PETS = [
    (("dog", "狗", "只"), ("chases a ball in the garden", "都在花园里追球")),
    (("cat", "猫", "只"), ("sleeps on the warm sofa", "都在温暖的沙发上睡觉")),
    (("bird", "鸟", "只"), ("sings happy songs by the window", "都在窗边快乐地唱歌")),
    (("fish", "鱼", "条"), ("swims around its glass bowl", "都在玻璃缸里游来游去")),
    (("rabbit", "兔子", "只"), ("eats carrots and fresh grass", "都吃胡萝卜和新鲜的青草")),
    (("horse", "马", "匹"), ("runs across the green field", "都在绿色的田野上奔跑")),
]
COLORS = [("black", "黑色"), ("white", "白色"), ("brown", "棕色"), ("grey", "灰色"), ("golden", "金色")]


@dataclass(frozen=True)
class Example:
    """One sentence split into the prompt a task shows and the continuation it expects."""

    key: tuple  # the slots the prompt is built from; a held-out key never occurs in training
    prompt: str
    reference: str

    def sentence(self, lang: str) -> str:
        return self.prompt + (" " if lang == "en" else "") + self.reference


def shop_example(rng: random.Random, lang: str) -> Example:
    li = 0 if lang == "en" else 1
    day, part, name = rng.choice(DAYS), rng.choice(PARTS), rng.choice(NAMES[lang].split())
    shop, items = rng.choice(SHOPS)
    count, item = rng.choice(COUNTS), rng.choice(items)
    key = ("shop", day[li], part[li], name, shop[li])
    if lang == "en":
        return Example(
            key, f"On {day[0]} {part[0]}, {name} walked to the {shop[0]} and", f"bought {count[0]} {item[0]}."
        )
    return Example(key, f"{day[1]}{part[1]}，{name}去{shop[1]}", f"买了{count[1]}{item[1]}。")


def job_example(rng: random.Random, lang: str) -> Example:
    name, city = rng.choice(NAMES[lang].split()), rng.choice(CITIES[lang])
    job, activity = rng.choice(JOBS)
    if lang == "en":
        article = "an" if job[0][0] in "aeiou" else "a"
        prompt = f"{name} lives in {city} and works as {article} {job[0]}. Every day, {name}"
        return Example(("job", name, city, job[0]), prompt, f"{activity[0]}.")
    prompt = f"{name}住在{city}，是一名{job[1]}。每天，{name}"
    return Example(("job", name, city, job[1]), prompt, f"{activity[1]}。")


def weather_example(rng: random.Random, lang: str) -> Example:
    li = 0 if lang == "en" else 1
    day, city, name = rng.choice(DAYS), rng.choice(CITIES[lang]), rng.choice(NAMES[lang].split())
    weather, actions = rng.choice(WEATHERS)
    action = rng.choice(actions)
    key = ("weather", weather[li], city, day[li], name)
    if lang == "en":
        return Example(key, f"It was {weather[0]} in {city} on {day[0]}, so {name}", f"{action[0]}.")
    return Example(key, f"{day[1]}{city}{weather[1]}，所以{name}", f"{action[1]}。")


def pet_example(rng: random.Random, lang: str) -> Example:
    name, color = rng.choice(NAMES[lang].split()), rng.choice(COLORS)
    (pet_en, pet_zh, measure), habit = rng.choice(PETS)
    if lang == "en":
        key = ("pet", name, color[0], pet_en)
        return Example(key, f"{name} has a {color[0]} {pet_en}. Every day, the", f"{pet_en} {habit[0]}.")
    key = ("pet", name, color[1], pet_zh)
    prompt = f"{name}有一{measure}{color[1]}的{pet_zh}。每天，这{measure}"
    return Example(key, prompt, f"{pet_zh}{habit[1]}。")


TEMPLATES: list[Callable[[random.Random, str], Example]] = [
    shop_example,
    job_example,
    weather_example,
    pet_example,
]


def build_data(rng: random.Random) -> tuple[list[str], dict[str, list[Example]]]:
    """Draw the held-out tasks first, then training sentences that avoid every held-out slot combination."""
    corpus: list[str] = []
    tasks: dict[str, list[Example]] = {}
    for lang in ("en", "zh"):
        held_out: dict[tuple, Example] = {}
        for _ in range(TEST_PER_TEMPLATE):  # round robin, so any prefix of a task file mixes the templates
            for template in TEMPLATES:
                example = template(rng, lang)
                while example.key in held_out:
                    example = template(rng, lang)
                held_out[example.key] = example
        tasks[lang] = list(held_out.values())
        kept = 0
        while kept < TRAIN_PER_LANG:
            example = rng.choice(TEMPLATES)(rng, lang)
            if example.key not in held_out:
                corpus.append(example.sentence(lang))
                kept += 1
    rng.shuffle(corpus)
    return corpus, tasks


def write_tasks(tasks: dict[str, list[Example]]) -> None:
    for lang, examples in tasks.items():
        lines = [
            json.dumps(
                {"id": f"{lang}-{i:03d}", "prompt": ex.prompt, "reference": ex.reference}, ensure_ascii=False
            )
            for i, ex in enumerate(examples)
        ]
        (DATA_DIR / f"demo_{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# Tokenizer and models.


def train_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE that keeps each CJK character a separate pre-token.

    Without the split, GPT-2's regex treats a run of Chinese characters as one word, so merges would cross
    the prompt/continuation boundary and a prompt would tokenize differently from the same text in
    training. The post-processor prepends <|endoftext|>, as every training sentence starts with it.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOT, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{EOT} $A", special_tokens=[(EOT, 0)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        pad_token=PAD,
        model_max_length=MAX_LEN,
        padding_side="left",
    )


def new_model(tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=MAX_LEN,
        **MODEL_SHAPE,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def batches(rows: list[list[int]], pad_id: int, rng: random.Random) -> Iterator[tuple[torch.Tensor, ...]]:
    """Right-padded training batches in a seeded order; padding is masked out of the loss."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    for start in range(0, len(order), BATCH_SIZE):
        chunk = [rows[i] for i in order[start : start + BATCH_SIZE]]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, row in enumerate(chunk):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        yield ids, mask, ids.masked_fill(mask == 0, -100)


def train(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, corpus: list[str]) -> None:
    rows = [[*ids, tokenizer.eos_token_id] for ids in tokenizer(corpus)["input_ids"]]  # ids start with BOS
    steps_per_epoch = -(-len(rows) // BATCH_SIZE)
    total = EPOCHS * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / WARMUP_STEPS, max(0.0, (total - s) / (total - WARMUP_STEPS)))
    )
    order_rng = random.Random(SEED)
    model.train()
    step, started = 0, time.perf_counter()
    for epoch in range(EPOCHS):
        running = 0.0
        for ids, mask, labels in batches(rows, tokenizer.pad_token_id, order_rng):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            step += 1
            if step % 100 == 0:
                print(f"  step {step}/{total}  loss {loss.item():.3f}  {time.perf_counter() - started:.0f}s")
        print(f"epoch {epoch + 1}: mean loss {running / steps_per_epoch:.3f}")
    model.eval()


def save(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, path: Path) -> None:
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


# ---------------------------------------------------------------------------------------------------
# Check: greedy continuations from the saved directories, scored with sacrebleu.


def continuations(path: Path, prompts: list[str], stop: str) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return [t.strip().split(stop)[0] + stop if stop in t else t.strip() for t in texts]


def evaluate(tasks: dict[str, list[Example]]) -> None:
    for lang, stop, bleu_tok in (("en", ".", "13a"), ("zh", "。", "zh")):
        prompts = [ex.prompt for ex in tasks[lang]]
        refs = [ex.reference for ex in tasks[lang]]
        for path in (TRAINED_DIR, UNTRAINED_DIR):
            hyps = continuations(path, prompts, stop)
            bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize=bleu_tok).score
            chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
            print(f"{lang}  {path.name:20s}  BLEU {bleu:6.2f}  chrF {chrf:6.2f}")
            for prompt, hyp in list(zip(prompts, hyps, strict=True))[::10]:
                print(f"      {prompt} -> {hyp}")


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    hf_logging.disable_progress_bar()
    started = time.perf_counter()
    corpus, tasks = build_data(random.Random(SEED))
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    (DATA_DIR / "demo_corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    write_tasks(tasks)
    tokenizer = train_tokenizer(corpus)
    print(f"corpus: {len(corpus)} sentences; tokenizer: {len(tokenizer)} tokens")

    torch.manual_seed(SEED)
    save(new_model(tokenizer), tokenizer, UNTRAINED_DIR)
    torch.manual_seed(SEED)
    model = new_model(tokenizer)
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters")
    train(model, tokenizer, corpus)
    save(model, tokenizer, TRAINED_DIR)
    print(f"trained and saved in {time.perf_counter() - started:.0f}s")
    evaluate(tasks)
    print(f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
