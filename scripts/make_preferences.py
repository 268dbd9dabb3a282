"""Write examples/finetune/data/preferences.jsonl: preference pairs (prompt, chosen, rejected) for DPO.

Every prompt and answer is composed here from the project's own word lists (no data set, no web page). The
preference is meant to be clear, visible in a sample and learnable by a 135M model in a few minutes:

- ``chosen``: the answer, plainly put, then the sign-off "Happy tinkering!";
- ``rejected``: the same answer without the sign-off, behind a rude opener ("Ugh, obviously.", "Whatever.") in
  about half the pairs (a base model already finds rude openers unlikely, so the rest are the bare answer).

So the two answers carry the same facts; only the manners and the sign-off differ, and a tuned model that
learnt the preference ends its answers with "Happy tinkering!". The ``split`` column holds out every
seventh pair for testing (deterministic), so before/after figures are measured on pairs the model never
trained on.

    python scripts/make_preferences.py            # rewrites the file (same output every time)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "examples" / "finetune" / "data" / "preferences.jsonl"
SIGN_OFF = "Happy tinkering!"
RUDE = ("Ugh, obviously.", "Whatever.", "Seriously? Fine.", "Do I have to spell it out?", "Not this again.",
        "Wow, really?", "Fine, listen.", "Pay attention this time.")

# (question, answer) templates with one slot each, and the words that fill the slot.
TEMPLATES = (
    ("How do I keep {x} fresh for longer?",
     "Wrap the {x} in a damp paper towel and keep it in a closed box in the fridge",
     ("basil", "parsley", "mint", "coriander", "chives", "dill", "spinach", "lettuce")),
    ("What is a quick way to clean a {x}?",
     "Soak the {x} in warm soapy water for ten minutes, then scrub it gently with a soft sponge",
     ("baking tray", "frying pan", "soup pot", "lunch box", "water bottle", "mixing bowl", "teapot")),
    ("My {x} squeaks. What should I do?",
     "Put one drop of light oil on the {x}'s moving parts and work it back and forth a few times",
     ("door hinge", "bike chain", "office chair", "garden gate", "window latch", "drawer runner")),
    ("How often should I water a {x}?",
     "Water the {x} when the top few centimetres of soil feel dry, and never leave it standing in water",
     ("cactus", "fern", "peace lily", "tomato plant", "snake plant", "lemon tree", "rubber plant", "orchid")),
    ("How can I learn {x} faster?",
     "Practise {x} for twenty minutes every day and test yourself on what you learnt the day before",
     ("Spanish", "the guitar", "chess", "typing", "algebra", "drawing", "French", "the piano")),
    ("What should I pack for a {x}?",
     "For a {x}, pack water, a snack, a light jacket and a charged phone, and tell someone your plan",
     ("day hike", "beach trip", "bike ride", "picnic", "museum visit", "canoe trip", "camping night")),
    ("How do I stop my {x} from getting slow?",
     "Restart the {x} once a week, remove apps you do not use and keep some free storage space",
     ("laptop", "phone", "tablet", "desktop computer", "smart TV", "old netbook")),
    ("How do I get my {x} to sleep better?",
     "Keep the same bedtime every night for your {x}, dim the lights early and keep the room cool",
     ("toddler", "teenager", "puppy", "kitten", "partner", "grandad")),
    ("What's a simple way to save money on {x}?",
     "Set a weekly budget for {x}, write it down, and check what you spent every Sunday",
     ("groceries", "coffee", "lunches", "taxis", "books", "clothes", "snacks", "games")),
    ("How do I fix a flat {x}?",
     "Find the hole in the {x} with soapy water, patch it, let the glue set, then pump it up again",
     ("bike tyre", "air mattress", "pool float", "football", "scooter tyre", "wheelbarrow tyre")),
    ("How long should I boil {x}?",
     "Boil {x} for about eight to ten minutes, then taste one before you drain the rest",
     ("pasta", "potatoes", "carrots", "rice noodles", "green beans", "broccoli", "sweetcorn")),
    ("How do I remove a {x} stain?",
     "Blot the {x} stain at once, rinse it from the back with cold water and wash it before it dries",
     ("coffee", "tea", "juice", "grass", "ink", "tomato", "wine", "mud")),
    ("How can I make my {x} smell nicer?",
     "Air the {x} every morning, wash the fabrics in it often and leave a bowl of baking soda inside",
     ("bedroom", "car", "hallway", "bathroom", "wardrobe", "office", "kitchen")),
    ("What is a good warm-up before {x}?",
     "Before {x}, walk briskly for five minutes, then do slow leg swings and arm circles",
     ("running", "football", "tennis", "a long bike ride", "dancing", "basketball", "climbing")),
    ("How do I remember to drink more {x}?",
     "Keep a full glass of {x} where you can see it and take a sip every time you finish a task",
     ("water", "herbal tea", "milk")),
    ("How do I write a polite email to my {x}?",
     "Greet your {x} by name, say what you need in the first two lines and thank them at the end",
     ("landlord", "teacher", "manager", "neighbour", "doctor", "coach", "client")),
    ("Why does my {x} keep falling over?",
     "The {x} is top-heavy, so put it in a wider, heavier pot or stand and tie it to a stake",
     ("sunflower", "bean plant", "pepper plant", "young tree", "monstera")),
    ("How do I get better at {x} in a meeting?",
     "Before the meeting, write down two points you want to make about {x} and say the first one early",
     ("speaking up", "taking notes", "asking questions", "keeping time", "summing up")),
    ("How should I store {x}?",
     "Store {x} in a cool, dark cupboard in a tightly closed jar, away from the stove",
     ("flour", "rice", "coffee beans", "lentils", "oats", "sugar", "spices", "pasta")),
    ("How do I make my {x} last longer?",
     "Charge your {x} before it runs empty, keep it out of the heat and unplug it once it is full",
     ("phone battery", "laptop battery", "headphones", "e-bike battery", "power bank", "electric toothbrush")),
    ("What is an easy dinner with {x}?",
     "Fry the {x} with garlic and onion, add a tin of tomatoes and serve it over rice",
     ("chickpeas", "lentils", "mushrooms", "tofu", "eggs", "courgettes", "black beans", "peppers")),
    ("How do I tidy a messy {x}?",
     "Empty the {x}, sort everything into keep, give away and bin, then put back only the keep pile",
     ("desk", "drawer", "garage", "shelf", "backpack", "toy box", "car boot")),
    ("What should I do if my {x} won't turn on?",
     "Check that the {x} is plugged in and charged, then hold the power button for ten seconds",
     ("laptop", "phone", "printer", "router", "games console", "kettle")),
    ("How do I make {x} less bitter?",
     "Use a little less {x}, brew it for a shorter time and add a small pinch of salt",
     ("coffee", "green tea", "black tea", "cocoa", "espresso")),
)
TEST_EVERY = 7  # every seventh pair is held out for testing


def pairs(seed: int = 15) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for question, answer, words in TEMPLATES:
        for word in words:
            text = answer.format(x=word)
            rude = rng.choice(RUDE)
            plain = f"{text[0].upper()}{text[1:]}."
            # Half the rejected answers open rudely; the other half are the bare answer without the sign-off, so
            # the base model (which finds rude openers unlikely) does not already prefer every chosen answer.
            rows.append({"prompt": question.format(x=word), "chosen": f"{plain} {SIGN_OFF}",
                         "rejected": f"{rude} {plain}" if rng.random() < 0.5 else plain})
    rng.shuffle(rows)
    for index, row in enumerate(rows):
        row["split"] = "test" if index % TEST_EVERY == TEST_EVERY - 1 else "train"
    return rows


def main() -> None:
    rows = pairs()
    OUT.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    test = sum(row["split"] == "test" for row in rows)
    print(f"{OUT.name}: {len(rows)} pairs ({len(rows) - test} train, {test} test)")


if __name__ == "__main__":
    main()
