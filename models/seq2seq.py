"""A multi-task seq2seq model whose three tasks are scheduled actions.

Section 4.3 of the AutoLoss paper (Xu et al., ICLR 2019) casts multi-task
neural machine translation (NMT) as three actions on one shared encoder:
translate German into English, or tag the German source with one of two
auxiliary labellings. A schedule picks one task per step. Here:

- `"mt"`: the masked mean token cross-entropy of the translation decoder
  (teacher forcing), over the encoder and the translation decoder;
- `"pos"`: the masked mean cross-entropy of part-of-speech tags per source
  position, over the encoder and the POS tagger;
- `"lemma"`: the same for lemma-edit classes, over the encoder and the
  lemma tagger.

Label 0 marks padding (and, for the taggers, positions without a label):
it never counts in a loss.

Architecture (Luong et al., 2015, dot attention, without input feeding so
that teacher forcing runs the decoder LSTMs over the whole target at
once):

    encoder:  source ids -> Embedding(E) -> [dropout]
              -> L_enc x Bidirectional(LSTM(u)) -> outputs [batch, S, 2u]
    mt:       target ids -> Embedding(E) -> [dropout]
              -> L_dec x LSTM(2u), layer i starting from the final
                 forward and backward states of encoder layer i
              -> dot attention of the top layer over the encoder outputs
              -> tanh(W [context; hidden]) -> [dropout] -> Dense(V_target)
    taggers:  encoder outputs -> [dropout] -> L_tag x Bidirectional(LSTM(u))
              -> Dense(number of labels)

The decoder width is 2u, so the dot product of its states with the
bidirectional encoder outputs is defined.

Optimizer state. The three groups overlap in the encoder. With
`optimizer_state="shared"` one Adam instance updates every action, so the
encoder's moments mix the gradients of all tasks. With `"per_action"`
each action has its own Adam, and the encoder has three sets of moments.
Both use learning rate 5e-4 and global gradient clipping at norm 1 by
default.

Features. The core tracks per action the normalized gradient norm and the
latest training loss, and one validation metric with its EMAs. This model
records the validation translation loss (log perplexity) as that metric.
It adds five features: the validation losses of the two taggers
(`val_loss/pos`, `val_loss/lemma`) and, per task, the gap between its
latest validation loss and its latest training loss (`val_gap/<task>`).
The validation values change only when `refresh_validation_features`
runs. The gaps also follow each step's training loss.
"""

import keras
import numpy as np
import tensorflow as tf

from autoloss_tf import ScheduledModel

MT, POS, LEMMA = "mt", "pos", "lemma"
TASKS = (MT, POS, LEMMA)
EXTRA_FEATURE_NAMES = (
    "val_loss/pos", "val_loss/lemma",
    "val_gap/mt", "val_gap/pos", "val_gap/lemma",
)
OPTIMIZER_STATES = ("shared", "per_action")
BATCH_KEYS = ("source", "target_in", "target_out", "pos", "lemma")
# Added to the attention scores of padded source positions.
_MASKED_SCORE = -1e9


def masked_cross_entropy(logits, labels):
    """Return the summed token cross-entropy and the number of tokens.

    Positions whose label is 0 are padding and do not count.

    Args:
        logits: float [..., num_classes].
        labels: int [...], 0 for padding.

    Returns:
        (sum of the cross-entropies, number of non-padding labels), both
        float32 scalars.
    """
    labels = tf.cast(labels, "int32")
    mask = tf.cast(labels != 0, "float32")
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=labels, logits=tf.cast(logits, "float32")
    )
    return tf.reduce_sum(losses * mask), tf.reduce_sum(mask)


def perplexity(cross_entropy_sum, token_count):
    """Return exp(mean token cross-entropy), the perplexity of a corpus.

    Args:
        cross_entropy_sum: the cross-entropy summed over all non-padding
            tokens, in nats.
        token_count: the number of those tokens, > 0.
    """
    if not token_count > 0:
        raise ValueError(
            "Perplexity needs at least one non-padding token. "
            f"Received: token_count={token_count}."
        )
    return float(np.exp(float(cross_entropy_sum) / float(token_count)))


def _mean(total, count):
    return total / tf.maximum(count, 1.0)


class BidirectionalLSTM(keras.layers.Layer):
    """A forward and a backward LSTM over right-padded sequences.

    The backward LSTM reads each sequence reversed within its own length
    (`tf.reverse_sequence`), so it starts at the last real token instead of
    at the padding. The outputs at real positions equal those of a masked
    bidirectional LSTM, and outputs at padded positions are set to 0.
    Without a Keras mask the LSTMs run about twice as fast on CPU. On 2
    shared cores, a forward and backward pass of a 1-layer, 64-unit BiLSTM
    over batch 64 and length 30 took 27-31 ms, against 48-62 ms with a
    mask.

    NOTE: the final states are taken after the whole padded length, so
    for a padded sentence they also went through its padding steps, unlike
    the final states of a masked LSTM.

    `call(inputs, mask)` returns (outputs [batch, S, 2u], (h, c)), where h
    and c concatenate the forward and backward final states [batch, 2u].
    """

    def __init__(self, units, seed, **kwargs):
        super().__init__(**kwargs)
        self.forward_lstm = self._lstm(units, seed, "forward")
        self.backward_lstm = self._lstm(units, seed + 2, "backward")

    @staticmethod
    def _lstm(units, seed, name):
        return keras.layers.LSTM(
            units, return_sequences=True, return_state=True,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            recurrent_initializer=keras.initializers.Orthogonal(seed=seed + 1),
            name=name,
        )

    def call(self, inputs, mask, training=False):
        lengths = tf.cast(tf.reduce_sum(mask, axis=1), "int64")
        forward, forward_h, forward_c = self.forward_lstm(
            inputs, training=training
        )
        reversed_inputs = tf.reverse_sequence(inputs, lengths, seq_axis=1,
                                              batch_axis=0)
        backward, backward_h, backward_c = self.backward_lstm(
            reversed_inputs, training=training
        )
        backward = tf.reverse_sequence(backward, lengths, seq_axis=1,
                                       batch_axis=0)
        outputs = tf.concat([forward, backward], axis=-1) * mask[:, :, None]
        return outputs, (
            tf.concat([forward_h, backward_h], axis=-1),
            tf.concat([forward_c, backward_c], axis=-1),
        )


class Encoder(keras.layers.Layer):
    """Source embedding and stacked bidirectional LSTMs.

    `call(source)` returns (outputs [batch, S, 2u], final states, mask).
    The final states list one (h, c) pair per layer, each the
    concatenation of the forward and backward states [batch, 2u]. The mask
    is float32 [batch, S], 1 at non-padding positions. Source sentences
    must be right-padded with 0.
    """

    def __init__(self, vocabulary_size, embedding_dim, units, num_layers,
                 dropout, seed, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(
            vocabulary_size, embedding_dim, name="embedding",
            embeddings_initializer=keras.initializers.RandomUniform(
                -0.05, 0.05, seed=seed),
        )
        self.lstms = [
            BidirectionalLSTM(units, seed + 10 + 4 * index,
                              name=f"bidirectional_lstm_{index}")
            for index in range(num_layers)
        ]
        self.dropouts = [
            keras.layers.Dropout(dropout, seed=seed + 100 + index,
                                 name=f"dropout_{index}")
            for index in range(num_layers + 1)
        ]

    def call(self, source, training=False):
        source = tf.cast(source, "int32")
        mask = tf.cast(source != 0, "float32")
        outputs = self.dropouts[0](self.embedding(source), training=training)
        states = []
        for lstm, dropout in zip(self.lstms, self.dropouts[1:]):
            outputs, final_states = lstm(outputs, mask, training=training)
            states.append(final_states)
            outputs = dropout(outputs, training=training)
        return outputs, states, mask


class TranslationDecoder(keras.layers.Layer):
    """Target embedding, stacked LSTMs, dot attention and the output layer.

    `call(target_in, encoder_outputs, encoder_states, source_mask)` returns
    the logits [batch, T, target vocabulary] under teacher forcing.
    `step` runs one decoding step for greedy search.
    """

    def __init__(self, vocabulary_size, embedding_dim, units, num_layers,
                 dropout, seed, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.embedding = keras.layers.Embedding(
            vocabulary_size, embedding_dim, name="embedding",
            embeddings_initializer=keras.initializers.RandomUniform(
                -0.05, 0.05, seed=seed),
        )
        self.lstms = [
            keras.layers.LSTM(
                units, return_sequences=True,
                kernel_initializer=keras.initializers.GlorotUniform(
                    seed=seed + 10 + 2 * index),
                recurrent_initializer=keras.initializers.Orthogonal(
                    seed=seed + 11 + 2 * index),
                name=f"lstm_{index}",
            )
            for index in range(num_layers)
        ]
        self.dropouts = [
            keras.layers.Dropout(dropout, seed=seed + 100 + index,
                                 name=f"dropout_{index}")
            for index in range(num_layers + 1)
        ]
        self.attention_projection = keras.layers.Dense(
            units, activation="tanh", use_bias=False,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
            name="attention_projection",
        )
        self.output_projection = keras.layers.Dense(
            vocabulary_size,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2),
            name="output_projection",
        )

    @staticmethod
    def initial_states(encoder_states, num_layers):
        """Return the (h, c) each decoder layer starts from.

        Decoder layer i starts from encoder layer i, or from the top encoder
        layer when the decoder has more layers.
        """
        last = len(encoder_states) - 1
        return [encoder_states[min(index, last)] for index in range(num_layers)]

    def attend(self, hidden, encoder_outputs, source_mask, training=False):
        """Return tanh(W [context; hidden]) for decoder states [batch, T, d]."""
        scores = tf.einsum("btd,bsd->bts", hidden, encoder_outputs)
        scores += (1.0 - source_mask[:, None, :]) * _MASKED_SCORE
        weights = tf.nn.softmax(scores, axis=-1)
        context = tf.einsum("bts,bsd->btd", weights, encoder_outputs)
        attentional = self.attention_projection(
            tf.concat([context, hidden], axis=-1)
        )
        return self.dropouts[-1](attentional, training=training)

    def call(self, target_in, encoder_outputs, encoder_states, source_mask,
             training=False):
        target_in = tf.cast(target_in, "int32")
        hidden = self.dropouts[0](self.embedding(target_in),
                                  training=training)
        states = self.initial_states(encoder_states, len(self.lstms))
        for index, lstm in enumerate(self.lstms):
            hidden = lstm(hidden, initial_state=list(states[index]),
                          training=training)
            if index + 1 < len(self.lstms):
                hidden = self.dropouts[index + 1](hidden, training=training)
        attentional = self.attend(hidden, encoder_outputs, source_mask,
                                  training=training)
        return self.output_projection(attentional)

    def step(self, tokens, states, encoder_outputs, source_mask):
        """Run one inference step: (logits [batch, V], new states)."""
        hidden = self.embedding(tokens)
        new_states = []
        for lstm, (h, c) in zip(self.lstms, states):
            hidden, (h, c) = lstm.cell(hidden, [h, c], training=False)
            new_states.append((h, c))
        attentional = self.attend(hidden[:, None, :], encoder_outputs,
                                  source_mask)
        return self.output_projection(attentional[:, 0]), new_states


class Tagger(keras.layers.Layer):
    """A labeller of source positions: optional BiLSTMs, then Dense."""

    def __init__(self, num_labels, units, num_layers, dropout, seed,
                 **kwargs):
        super().__init__(**kwargs)
        self.input_dropout = keras.layers.Dropout(dropout, seed=seed + 100,
                                                  name="input_dropout")
        self.lstms = [
            BidirectionalLSTM(units, seed + 10 + 4 * index,
                              name=f"bidirectional_lstm_{index}")
            for index in range(num_layers)
        ]
        self.output_projection = keras.layers.Dense(
            num_labels,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            name="output_projection",
        )

    def call(self, encoder_outputs, source_mask, training=False):
        hidden = self.input_dropout(encoder_outputs, training=training)
        for lstm in self.lstms:
            hidden, _ = lstm(hidden, source_mask, training=training)
        return self.output_projection(hidden)


@keras.saving.register_keras_serializable(package="autoloss_models")
class Seq2SeqMultiTask(ScheduledModel):
    """Multi-task NMT: one shared encoder, a translation decoder, two taggers.

    `fit` takes batches that are dicts of int32 arrays with the keys
    `source` [batch, S], `target_in` [batch, T] (starting with the
    beginning-of-sentence id), `target_out` [batch, T] (ending with the
    end-of-sentence id), `pos` [batch, S] and `lemma` [batch, S]. The id 0
    is padding in all of them. Calling the model on a dict with `source`
    and `target_in` returns the translation logits.

    Args:
        source_vocabulary_size: German ids, padding 0 included.
        target_vocabulary_size: English ids, padding 0 included.
        num_pos_tags: POS label ids, 0 (no label) included.
        num_lemma_classes: lemma-edit label ids, 0 (no label) included.
        embedding_dim: size of both word embeddings. Defaults to 128.
        encoder_units: LSTM units per direction of the encoder; the
            translation decoder has twice as many. Defaults to 64.
        encoder_layers: bidirectional encoder layers. Defaults to 1.
        decoder_layers: translation decoder LSTM layers. Defaults to 1.
        tagger_layers: bidirectional LSTM layers of each tagger before its
            Dense output; 0 makes a tagger a Dense layer on the encoder
            outputs. Defaults to 0.
        dropout: dropout rate after the embeddings, between LSTM layers, on
            the attentional vector and on the tagger inputs. Defaults to 0.
        learning_rate: Adam learning rate. Defaults to 5e-4.
        global_clipnorm: Adam's global gradient norm clip, or None.
            Defaults to 1.0.
        optimizer_state: `"shared"` (one Adam for all actions) or
            `"per_action"` (one Adam each). Defaults to `"shared"`.
        seed: seed of the initial weights and the dropout masks.
            Defaults to 0.
        **kwargs: passed to `keras.Model`. `population` is not supported.

    Attributes:
        encoder, translation_decoder, pos_tagger, lemma_tagger: the layers.
        task_optimizers: dict action name -> its Adam instance (the same
            instance three times when the state is shared).
        validation_losses: float32 [3], the latest validation loss per task
            in `TASKS` order, read by the extra features.
        applied_steps: int64 [3], steps applied per task so far.
        probability_sums: float32 [3], the schedule's probability of each
            task summed over the steps so far.
    """

    def __init__(self, source_vocabulary_size, target_vocabulary_size,
                 num_pos_tags, num_lemma_classes, embedding_dim=128,
                 encoder_units=64, encoder_layers=1, decoder_layers=1,
                 tagger_layers=0, dropout=0.0, learning_rate=5e-4,
                 global_clipnorm=1.0, optimizer_state="shared", seed=0,
                 **kwargs):
        population = kwargs.pop("population", None)
        if population is not None:
            raise ValueError(
                "Seq2SeqMultiTask trains a single model, because population "
                "mode needs every action to update the same variables. "
                f"Received: population={population!r}. Create one model "
                "per run instead."
            )
        super().__init__(**kwargs)
        _check_sizes(
            source_vocabulary_size=source_vocabulary_size,
            target_vocabulary_size=target_vocabulary_size,
            num_pos_tags=num_pos_tags, num_lemma_classes=num_lemma_classes,
            embedding_dim=embedding_dim, encoder_units=encoder_units,
            encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        )
        _check_training_settings(tagger_layers, dropout, learning_rate,
                                 global_clipnorm, optimizer_state)
        self.source_vocabulary_size = int(source_vocabulary_size)
        self.target_vocabulary_size = int(target_vocabulary_size)
        self.num_pos_tags = int(num_pos_tags)
        self.num_lemma_classes = int(num_lemma_classes)
        self.embedding_dim = int(embedding_dim)
        self.encoder_units = int(encoder_units)
        self.encoder_layers = int(encoder_layers)
        self.decoder_layers = int(decoder_layers)
        self.tagger_layers = int(tagger_layers)
        self.dropout = float(dropout)
        self.learning_rate = float(learning_rate)
        self.global_clipnorm = (
            None if global_clipnorm is None else float(global_clipnorm)
        )
        self.optimizer_state = optimizer_state
        self.seed = int(seed)
        self._build_layers()
        self.validation_losses = self.add_weight(
            name="validation_losses", shape=(len(TASKS),),
            initializer="zeros", trainable=False,
        )
        self.applied_steps = self.add_weight(
            name="applied_steps", shape=(len(TASKS),), initializer="zeros",
            dtype="int64", trainable=False,
        )
        self.probability_sums = self.add_weight(
            name="probability_sums", shape=(len(TASKS),),
            initializer="zeros", trainable=False,
        )
        self.task_optimizers = self._new_optimizers()
        groups = {
            MT: [self.encoder, self.translation_decoder],
            POS: [self.encoder, self.pos_tagger],
            LEMMA: [self.encoder, self.lemma_tagger],
        }
        losses = {MT: self.mt_loss, POS: self.pos_loss,
                  LEMMA: self.lemma_loss}
        for task in TASKS:
            self.add_action(task, losses[task], variables=groups[task],
                            optimizer=self.task_optimizers[task])
        self._decoders = {}
        self._loss_sums_function = None
        self.built = True

    def _build_layers(self):
        seed = self.seed * 1000
        self.encoder = Encoder(
            self.source_vocabulary_size, self.embedding_dim,
            self.encoder_units, self.encoder_layers, self.dropout, seed,
            name="encoder",
        )
        self.translation_decoder = TranslationDecoder(
            self.target_vocabulary_size, self.embedding_dim,
            2 * self.encoder_units, self.decoder_layers, self.dropout,
            seed + 200, name="translation_decoder",
        )
        self.pos_tagger = Tagger(
            self.num_pos_tags, self.encoder_units, self.tagger_layers,
            self.dropout, seed + 400, name="pos_tagger",
        )
        self.lemma_tagger = Tagger(
            self.num_lemma_classes, self.encoder_units, self.tagger_layers,
            self.dropout, seed + 600, name="lemma_tagger",
        )
        # One eager pass on a one-sentence batch creates every weight.
        source = tf.ones([1, 2], "int32")
        outputs, states, mask = self.encoder(source)
        self.translation_decoder(tf.ones([1, 2], "int32"), outputs, states,
                                 mask)
        self.pos_tagger(outputs, mask)
        self.lemma_tagger(outputs, mask)

    def _new_optimizers(self):
        def adam():
            return keras.optimizers.Adam(
                self.learning_rate, global_clipnorm=self.global_clipnorm
            )

        if self.optimizer_state == "shared":
            shared = adam()
            return {task: shared for task in TASKS}
        return {task: adam() for task in TASKS}

    # Forward passes -------------------------------------------------------

    def call(self, inputs, training=False):
        outputs, states, mask = self.encoder(inputs["source"],
                                             training=training)
        return self.translation_decoder(inputs["target_in"], outputs, states,
                                        mask, training=training)

    def task_logits(self, batch, training=False):
        """Return the logits of every task for a batch, encoding it once.

        Returns:
            dict task -> logits: [batch, T, V_target] for `"mt"` and
            [batch, S, labels] for the taggers.
        """
        outputs, states, mask = self.encoder(batch["source"],
                                             training=training)
        return {
            MT: self.translation_decoder(batch["target_in"], outputs, states,
                                         mask, training=training),
            POS: self.pos_tagger(outputs, mask, training=training),
            LEMMA: self.lemma_tagger(outputs, mask, training=training),
        }

    # Actions ------------------------------------------------------------

    def mt_loss(self, data):
        """Return the mean token cross-entropy of the translation."""
        logits = self.call(data, training=True)
        return _mean(*masked_cross_entropy(logits, data["target_out"]))

    def pos_loss(self, data):
        """Return the mean cross-entropy of the labelled POS positions."""
        return self._tagging_loss(self.pos_tagger, data, "pos")

    def lemma_loss(self, data):
        """Return the mean cross-entropy of the labelled lemma positions."""
        return self._tagging_loss(self.lemma_tagger, data, "lemma")

    def _tagging_loss(self, tagger, data, key):
        outputs, _, mask = self.encoder(data["source"], training=True)
        logits = tagger(outputs, mask, training=True)
        return _mean(*masked_cross_entropy(logits, data[key]))

    def train_step(self, data):
        logs = super().train_step(data)
        action = logs["action"]
        applied = tf.one_hot(action, len(TASKS), dtype="int64")
        self.applied_steps.assign_add(applied)
        self.probability_sums.assign_add(
            tf.stack([logs[f"p_{task}"] for task in TASKS])
        )
        return logs

    # Features -------------------------------------------------------------

    def extra_feature_names(self):
        return list(EXTRA_FEATURE_NAMES)

    def extra_features(self, data):
        del data
        validation = tf.convert_to_tensor(self.validation_losses)
        training = tf.convert_to_tensor(self.feature_tracker.loss_values)[0]
        gaps = validation - training
        values = tf.concat([validation[1:], gaps], axis=0)
        return values[None, :]

    def validation_metric(self, x, y):
        raise ValueError(
            "Seq2SeqMultiTask does not read `feature_validation_data`, "
            "because its batches are dicts of five arrays. Call "
            "refresh_validation_features(split) between fit calls instead."
        )

    def refresh_validation_features(self, split, batch_size=256):
        """Evaluate every task on a split and store the validation features.

        The translation loss goes to the core's `val_metric` feature (with
        its EMA and the EMA of its differences), all three losses to
        `validation_losses`. The gap features then use them from the next
        step on.

        Args:
            split: an object with the arrays `source`, `target_in`,
                `target_out`, `pos` and `lemma`.
            batch_size: sentences per evaluation batch. Defaults to 256.

        Returns:
            The dict of `evaluate_split`.
        """
        result = self.evaluate_split(split, batch_size=batch_size)
        losses = [result[task]["loss"] for task in TASKS]
        self.validation_losses.assign(np.asarray(losses, "float32"))
        self.feature_tracker.record_validation(
            tf.constant([losses[0]], "float32")
        )
        return result

    # Evaluation ---------------------------------------------------------

    def evaluate_split(self, split, batch_size=256):
        """Return each task's token-weighted loss on a whole split.

        Every task's loss is the cross-entropy summed over all non-padding
        labels of the split divided by their number, so long sentences
        weigh more than in a mean of batch means. Dropout is off.

        Returns:
            dict task -> {"loss", "tokens"}, plus `"mt_perplexity"`, the
            exponential of the translation loss.
        """
        _check_batch_size(batch_size)
        if self._loss_sums_function is None:
            self._loss_sums_function = tf.function(
                self._loss_sums, input_signature=[_batch_signature()],
                reduce_retracing=True,
            )
        totals = np.zeros((len(TASKS), 2), "float64")
        count = len(split.source)
        if count == 0:
            raise ValueError("evaluate_split needs a non-empty split.")
        for start in range(0, count, batch_size):
            batch = split_batch(split, slice(start, start + batch_size))
            totals += self._loss_sums_function(batch).numpy()
        result = {}
        for index, task in enumerate(TASKS):
            total, tokens = totals[index]
            result[task] = {"loss": float(total / max(tokens, 1.0)),
                            "tokens": int(tokens)}
        result["mt_perplexity"] = perplexity(*totals[0])
        return result

    def _loss_sums(self, batch):
        logits = self.task_logits(batch, training=False)
        labels = {MT: batch["target_out"], POS: batch["pos"],
                  LEMMA: batch["lemma"]}
        return tf.stack([
            tf.stack(masked_cross_entropy(logits[task], labels[task]))
            for task in TASKS
        ])

    def translate(self, source, bos_id, eos_id, max_length, batch_size=256):
        """Translate source ids greedily; return int32 [n, max_length].

        Each row contains the generated target ids, ending with `eos_id`
        if the decoder emitted it, and 0 after it.
        """
        _check_batch_size(batch_size)
        if max_length < 1:
            raise ValueError(
                f"`max_length` must be >= 1. Received: {max_length}."
            )
        key = (int(bos_id), int(eos_id), int(max_length))
        if key not in self._decoders:
            self._decoders[key] = tf.function(
                lambda ids: self._greedy_decode(ids, *key),
                input_signature=[tf.TensorSpec([None, None], tf.int32)],
                reduce_retracing=True,
            )
        source = np.asarray(source, "int32")
        outputs = [
            self._decoders[key](tf.constant(source[start:start + batch_size])
                                ).numpy()
            for start in range(0, len(source), batch_size)
        ]
        if not outputs:
            return np.zeros((0, max_length), "int32")
        return np.concatenate(outputs)

    def _greedy_decode(self, source, bos_id, eos_id, max_length):
        decoder = self.translation_decoder
        outputs, encoder_states, mask = self.encoder(source, training=False)
        states = tuple(decoder.initial_states(encoder_states,
                                              len(decoder.lstms)))
        batch = tf.shape(source)[0]
        tokens = tf.fill([batch], tf.constant(bos_id, "int32"))
        finished = tf.zeros([batch], "bool")
        written = tf.TensorArray("int32", size=max_length)

        def body(t, tokens, finished, states, written):
            logits, new_states = decoder.step(tokens, states, outputs, mask)
            chosen = tf.argmax(logits, axis=-1, output_type="int32")
            chosen = tf.where(finished, 0, chosen)
            written = written.write(t, chosen)
            finished = tf.logical_or(finished, tf.equal(chosen, eos_id))
            return t + 1, chosen, finished, tuple(new_states), written

        def not_done(t, tokens, finished, states, written):
            return tf.logical_and(t < max_length,
                                  tf.logical_not(tf.reduce_all(finished)))

        _, _, _, _, written = tf.while_loop(
            not_done, body, (0, tokens, finished, states, written)
        )
        # Rows end early when every sentence is finished: pad to max_length.
        ids = tf.transpose(written.stack())
        padding = max_length - tf.shape(ids)[1]
        return tf.pad(ids, [[0, 0], [0, padding]])

    def get_config(self):
        config = super().get_config()
        config.update(
            source_vocabulary_size=self.source_vocabulary_size,
            target_vocabulary_size=self.target_vocabulary_size,
            num_pos_tags=self.num_pos_tags,
            num_lemma_classes=self.num_lemma_classes,
            embedding_dim=self.embedding_dim,
            encoder_units=self.encoder_units,
            encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers,
            tagger_layers=self.tagger_layers, dropout=self.dropout,
            learning_rate=self.learning_rate,
            global_clipnorm=self.global_clipnorm,
            optimizer_state=self.optimizer_state, seed=self.seed,
        )
        return config


def split_batch(split, rows):
    """Return the batch dict of some rows of a split (int32 arrays)."""
    return {key: tf.constant(np.asarray(getattr(split, key)[rows], "int32"))
            for key in BATCH_KEYS}


def _batch_signature():
    return {key: tf.TensorSpec([None, None], tf.int32) for key in BATCH_KEYS}


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or (
            batch_size < 1):
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: "
            f"batch_size={batch_size!r}."
        )


def _check_sizes(**sizes):
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(
                value, (int, np.integer)) or value < 1:
            raise ValueError(
                f"`{name}` must be a positive integer. "
                f"Received: {name}={value!r}."
            )
    for name in ("source_vocabulary_size", "target_vocabulary_size",
                 "num_pos_tags", "num_lemma_classes"):
        if sizes[name] < 2:
            raise ValueError(
                f"`{name}` counts the padding id 0 too, so it must be >= 2. "
                f"Received: {name}={sizes[name]}."
            )


def _check_training_settings(tagger_layers, dropout, learning_rate,
                             global_clipnorm, optimizer_state):
    if isinstance(tagger_layers, bool) or not isinstance(
            tagger_layers, (int, np.integer)) or tagger_layers < 0:
        raise ValueError(
            "`tagger_layers` must be a non-negative integer. "
            f"Received: tagger_layers={tagger_layers!r}."
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"`dropout` must be in [0, 1). Received: dropout={dropout!r}."
        )
    if not learning_rate > 0:
        raise ValueError(
            "`learning_rate` must be > 0. "
            f"Received: learning_rate={learning_rate!r}. Pass e.g. 5e-4."
        )
    if global_clipnorm is not None and not global_clipnorm > 0:
        raise ValueError(
            "`global_clipnorm` must be > 0 or None. "
            f"Received: global_clipnorm={global_clipnorm!r}."
        )
    if optimizer_state not in OPTIMIZER_STATES:
        raise ValueError(
            f"`optimizer_state` must be one of {OPTIMIZER_STATES}. "
            f"Received: optimizer_state={optimizer_state!r}."
        )
