"""A plain peft + transformers ``Trainer`` fine-tune, written the way the libraries' docs teach it.

This is the yardstick of the bench's figure "fine-tune trainer: app / plain peft+Trainer"
(``python -m playground bench``): the same model folder, the same prompt/completion pairs and the
same settings go through this short script and through the app's trainer
(:mod:`playground.finetune.train`), and their training speeds are compared. The app never calls it.

It is what a learner writes after reading the peft and transformers guides, nothing more:
``AutoModelForCausalLM`` + ``peft.get_peft_model`` with a ``LoraConfig``; each example is the chat
template of the prompt (a user turn) and of the whole exchange, tokenised, with the labels set to
-100 on the prompt so the loss falls on the answer only; ``DataCollatorForSeq2Seq`` pads each batch;
the stock ``Trainer`` trains with its default optimizer, scheduler and data order. The data's
preparation (reading the bundled set, its template, the train split) is the caller's, so both
trainers read exactly the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class PlainSettings:
    """The knobs the comparison keeps equal between the app's trainer and this script."""

    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ()  # empty: peft's default for the architecture
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 384
    learning_rate: float = 2e-4
    max_steps: int = 10
    seed: int = 42

    @classmethod
    def from_config(cls, config, target_modules: Sequence[str] = ()) -> "PlainSettings":
        """The settings of a :class:`~playground.finetune.config.FinetuneConfig` (targets as the app resolves them)."""
        return cls(lora_r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                   target_modules=tuple(config.target_modules or target_modules), batch_size=config.batch_size,
                   grad_accum=config.grad_accum, max_length=config.max_length, learning_rate=config.learning_rate,
                   max_steps=config.max_steps, seed=config.seed)


def encode_example(tokenizer, prompt: str, completion: str, max_length: int) -> dict[str, list[int]]:
    """input_ids, attention_mask and labels of one exchange; labels are -100 on the prompt's tokens."""
    user = [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": completion}], tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    input_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
    labels = [-100] * len(prompt_ids) + input_ids[len(prompt_ids):]
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def build_trainer(model_folder: Path, pairs: Sequence[tuple[str, str]], settings: PlainSettings, output_dir: Path,
                  callbacks: Sequence = ()):
    """The model with its LoRA adapter and a ready ``Trainer`` over ``pairs`` of (prompt, completion)."""
    import datasets
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    # bf16 where the GPU has it, fp32 otherwise: the precision the app's trainer picks on the same machine.
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.bfloat16 if bf16 else torch.float32)
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=list(settings.target_modules) or None, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)

    rows = datasets.Dataset.from_list([{"prompt": p, "completion": c} for p, c in pairs])
    train_dataset = rows.map(lambda row: encode_example(tokenizer, row["prompt"], row["completion"],
                                                        settings.max_length),
                             remove_columns=["prompt", "completion"])
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum, learning_rate=settings.learning_rate,
        max_steps=settings.max_steps, seed=settings.seed, bf16=bf16, logging_steps=10, save_strategy="no",
        report_to="none", disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=train_dataset,
                   data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True), processing_class=tokenizer,
                   callbacks=list(callbacks))
