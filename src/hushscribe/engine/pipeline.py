"""faster-whisper's batched pipeline with the language chosen per job, in the decoder's own pass.

Several jobs share one batched decode (see ``batch.py``). Each clip is decoded in its job's
language: given by the caller, or detected from the encoder output of the job's first clip, the
very encoding the decoder needs next. A job of unknown language therefore costs no encoder pass
of its own, where faster-whisper (and ``prepare``) spend one extra pass per file on detection.
"""

from __future__ import annotations

from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import BatchedInferencePipeline
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import TranscriptionOptions

from hushscribe.engine.language import language_probabilities
from hushscribe.engine.loader import Whisper


class JobsPipeline(BatchedInferencePipeline):  # type: ignore[misc]
    """One decode of clips that belong to several jobs.

    ``clip_jobs[k]`` is the job of the k-th clip, in the order faster-whisper decodes them (the
    order of ``clip_timestamps``); ``languages[j]`` is job j's language, or None to detect it. A
    job's clips are consecutive, so its first clip is always encoded before, or with, the rest.
    """

    def __init__(self, model: Whisper, clip_jobs: list[int], languages: list[str | None]) -> None:
        super().__init__(model)
        self.whisper = model
        self.clip_jobs = clip_jobs
        self.languages = list(languages)
        self.probabilities = [1.0] * len(languages)
        self._next_clip = 0

    def generate_segment_batched(
        self, features: np.ndarray, tokenizer: Tokenizer, options: TranscriptionOptions
    ) -> tuple[ctranslate2.StorageView, list[dict[str, Any]]]:
        clips = self.clip_jobs[self._next_clip : self._next_clip + len(features)]
        self._next_clip += len(features)
        previous = tokenizer.encode(options.initial_prompt) if options.initial_prompt else []
        prompt = self.whisper.get_prompt(
            tokenizer, previous_tokens=previous, without_timestamps=options.without_timestamps,
            hotwords=options.hotwords,
        )  # fmt: skip
        max_length = self.whisper.max_length
        if options.max_new_tokens is not None:
            max_length = min(max_length, len(prompt) + options.max_new_tokens)
        encoder_output = self.whisper.encode(features)
        prompts = [list(prompt) for _ in clips]
        if self.whisper.model.is_multilingual:
            self._resolve_languages(encoder_output, clips)
            slot = prompt.index(tokenizer.language)
            for k, job in enumerate(clips):
                prompts[k][slot] = tokenizer.tokenizer.token_to_id(f"<|{self.languages[job]}|>")
        results = self.whisper.model.generate(
            encoder_output,
            prompts,
            beam_size=options.beam_size,
            patience=options.patience,
            length_penalty=options.length_penalty,
            max_length=max_length,
            suppress_blank=options.suppress_blank,
            suppress_tokens=options.suppress_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            sampling_temperature=options.temperatures[0],
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
        )
        output = []
        for result in results:
            length = len(result.sequences_ids[0])
            cumulative = result.scores[0] * (length**options.length_penalty)
            output.append(
                {
                    "avg_logprob": cumulative / (length + 1),
                    "no_speech_prob": result.no_speech_prob,
                    "tokens": result.sequences_ids[0],
                }
            )
        return encoder_output, output

    def _resolve_languages(self, encoder_output: ctranslate2.StorageView, clips: list[int]) -> None:
        """Detect, from this batch's encoder output, the language of each job still unknown."""
        if all(self.languages[job] is not None for job in clips):
            return
        detected = self.whisper.model.detect_language(encoder_output)
        for k, job in enumerate(clips):
            if self.languages[job] is None:
                probabilities = language_probabilities(detected[k])
                best = max(probabilities, key=lambda lang: probabilities[lang])
                self.languages[job], self.probabilities[job] = best, probabilities[best]
