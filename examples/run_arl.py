#!/usr/bin/env python
"""Train a multimodal classifier with ARL on the HuggingFace stack.

    python examples/run_arl.py                                   # AV-Digits, a few minutes on CPU
    python examples/run_arl.py --preset cremad --data_dir /data/CREMA-D
    python examples/run_arl.py --preset cremad_official --data_dir /data/CREMA-D --arl_gamma 3
    python examples/run_arl.py --strategy none                   # the concatenation baseline
    python examples/run_arl.py config.yaml                       # options from a JSON/YAML file
    accelerate launch --mixed_precision bf16 examples/run_arl.py --preset ave --data_dir /data/AVE
    accelerate launch --multi_gpu --num_processes 2 examples/run_arl.py --use_cpu   # 2-process CPU DDP

The steps below are those of `arl-hf train` (arl_hf.scripts.train.train_and_evaluate); the parser
is the same (arl_hf.scripts.train.make_parser). An output_dir that already holds a run is refused:
pass --overwrite_output_dir or --resume.
"""

import sys

from transformers import set_seed

from arl_hf import ARLTrainer
from arl_hf.arguments import setup_logging
from arl_hf.building import build_model, label_names, load_data, num_labels, prepare_splits, sample_batch
from arl_hf.distributed import shutdown
from arl_hf.evaluation import evaluate_splits
from arl_hf.log import get_logger
from arl_hf.outputs import configure_run_card, prepare_output_dir, save_run
from arl_hf.scripts import train
from arl_hf.scripts.command import pop_debug, user_errors

logger = get_logger("arl_hf.examples.run_arl")


def main(argv=None) -> int:
    argv, debug = pop_debug(sys.argv[1:] if argv is None else argv)  # --debug: tracebacks instead of one line
    if any(a in ("-h", "--help") for a in argv):
        return train.main(argv, prog="run_arl.py")  # every option, with the preset's values as defaults

    with user_errors("run_arl.py", debug):
        # 1. Options: ARLConfig + model + data + run arguments, parsed once. The preset (default
        #    avdigits_main), then a config file, then the flags given here, each overriding the last.
        training_args, model_args, data_args, run_args = train.parse_args(argv)
        setup_logging(training_args, training_args.process_index, summary=(
            f"device {training_args.device}, world size {training_args.world_size}, "
            f"mixed precision {'bf16' if training_args.bf16 else 'fp16' if training_args.fp16 else 'no'}"))
        # refuses an output_dir holding another run; with --resume, the checkpoint to continue
        resume_from = prepare_output_dir(training_args, run_args)
        set_seed(training_args.seed)

        # 2. Data: train / validation / test splits, their collator, and the run record (what the data
        #    is, saved in the model's config, so the checkpoint can be evaluated later).
        #    The encoder options name the tokenizers / processors of hf: encoders for raw columns.
        dataset, collator, record = load_data(data_args, seed=training_args.seed, model_args=model_args)
        dataset = prepare_splits(dataset, data_args, record, run_args.preset)
        logger.info("dataset %s: %s examples", record.dataset, {k: len(v) for k, v in dataset.items()})

        # 3. Model: one encoder per modality of the dataset (read from a collated batch) + fusion,
        #    or the checkpoint of --model_name_or_path.
        batch = sample_batch(dataset["train"], collator)
        model = build_model(batch, num_labels(dataset), model_args, record, label_names(dataset))
        train.print_modalities(training_args, batch, model, record)  # column, kind, shape and encoder of each

        # 4. Trainer: evaluates the validation split every epoch and keeps the best checkpoint
        #    (load_best_model_at_end, metric_for_best_model=accuracy). Its model card is the run's,
        #    configured once here and written once, when the model is saved.
        trainer = ARLTrainer(
            model=model,
            args=training_args,
            train_dataset=dataset["train"],
            eval_dataset=dataset["validation"],
            data_collator=collator,
        )
        configure_run_card(trainer, model_args, run_args, argv)

        # 5. Train.
        train_result = trainer.train(resume_from_checkpoint=resume_from)

        # 6. Evaluate the selected checkpoint on validation and, once, on test.
        metrics = evaluate_splits(trainer, dataset)

        # 7. Save: plots/*.png, model.safetensors + config.json (AutoModel.from_pretrained after
        #    `import arl_hf`) and the README.md card, the training state, results.json.
        save_run(trainer, train_result, metrics, record, run_args)

        # 8. Push the output_dir (checkpoint, card, plots, results) with --push_to_hub.
        if training_args.push_to_hub:
            trainer.push_to_hub(commit_message="End of training")

        train.print_results(training_args, metrics)
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
