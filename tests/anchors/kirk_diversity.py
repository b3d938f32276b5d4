# ruff: noqa
"""Verbatim reference copies of Kirk et al. 2023's diversity metrics, for the tests only.

Source: https://github.com/facebookresearch/rlfh-gen-div at commit
333c80b12b047f67fb2e853ae9a7fafdf7d5c95f (unchanged at 7291e6d), folder rlvsil/diversity/
(files named above each block). Those files are "adapted from
https://github.com/GuyTevet/diversity-eval" and licensed under the MIT License by that
folder's LICENSE ("Copyright (c) 2020 Guy Tevet"; Meta's headers: "Copyright (c) Meta
Platforms, Inc. and affiliates"); the MIT notice is reproduced at the end of this file. The
rest of the repository is CC-BY-NC; nothing from it is copied here.

The definitions below are copied unchanged (lint is off so they stay byte-identical). Ours:
this header, the imports, and three aliases (`metric`, `utils`, `similarity_metrics`) that
let the copied bodies' `metric.X` / `utils.X` references resolve inside this single file.
`SentBertSimilarity.__init__` downloads `bert-large-nli-stsb-mean-tokens` from the hub: the
tests never call it (they build the object with `__new__` and set `.model`), so
`sentence_transformers` and `torch` are left unimported. tests/test_metrics.py and
tests/test_diversity.py compare evaluators/metrics.py and evaluators/diversity.py with them.
"""

import sys
from abc import ABC, abstractmethod

import numpy as np
from sklearn.metrics.pairwise import cosine_similarity

metric = utils = similarity_metrics = sys.modules[__name__]


# ---- rlvsil/diversity/utils.py, lines 71-76
def lines_to_ngrams(lines, n=3):
    ngrams = []
    for s in lines:
        words = [e for e in s.replace(".", "").replace("\n", "").split(" ") if e != ""]
        ngrams.append([tuple(words[i : i + n]) for i in range(len(words) - n + 1)])
    return ngrams


# ---- rlvsil/diversity/metric.py, lines 19-19
similarity2diversity_function = lambda sim_score_list: 1 - np.mean(sim_score_list)


# ---- rlvsil/diversity/metric.py, lines 22-43
class Metric(ABC):
    use_me = False  # static var indicates to run files whether or not to use this metric
    default_config: dict = {}  # static var, specifies the default config for run files

    def __init__(self, config):
        self.config = config

        # validate config
        assert type(self.config) == dict, "Metric config must be dict type."

    @abstractmethod
    def __call__(self, *args, **kwargs):
        pass

    def uint_assert(self, field_name):
        err_msg = "Required: {}(int) > 0".format(field_name)
        assert type(self.config.get(field_name, None)) == int, err_msg
        assert self.config[field_name] > 0, err_msg

    def input_path_assert(self, field_name):
        err_msg = "[{}] not exists.".format(field_name)
        assert os.path.exists(self.config.get(field_name, None)), err_msg


# ---- rlvsil/diversity/metric.py, lines 46-60
class DiversityMetric(Metric):
    required_input = "response_set"  # in most cases, the diversity metric input is the response set S_c

    def __init__(self, config):
        super().__init__(config)

    @abstractmethod
    def __call__(self, response_set):
        # validate input
        # assert type(response_set) == list
        # assert all([type(e) == str for e in response_set])

        # place holder
        diversity_score = None
        return diversity_score


# ---- rlvsil/diversity/metric.py, lines 63-74
class SimilarityMetric(Metric):
    def __init__(self, config):
        super().__init__(config)

    @abstractmethod
    def __call__(self, resp_a, resp_b):
        # validate input
        # assert type(resp_a) == type(resp_b) == str

        # place holder
        similarity_score = None
        return similarity_score


# ---- rlvsil/diversity/metric.py, lines 77-129
class Similarity2DiversityMetric(DiversityMetric):
    """
    Implements the diversity to similarity reduction specified on section 5 in the paper
    (https://arxiv.org/pdf/2004.02990.pdf)
    for any similarity metric.

    config:
        shared with the original similarity metric.

    usage:
        metric = Similarity2DiversityMetric(config, SimilarityMetricClassName)
        metric(response_set)

    inheritance guidelines:
        implement __init__ only

    inheritance example:
        see CosineSimilarity2Diversity
    """

    batched = False
    batch_size = 1

    def __init__(self, config, similarity_metric_class):
        super().__init__(config)
        assert issubclass(similarity_metric_class, SimilarityMetric)
        self.similarity_metric = similarity_metric_class(config)

    def __call__(self, response_set):
        super().__call__(response_set)

        if not self.batched:
            similarity_list = []
            for i in range(len(response_set)):
                for j in range(i):
                    similarity_list.append(self.similarity_metric(response_set[i], response_set[j]))
        else:
            pairs = []
            for i in range(len(response_set)):
                for j in range(i):
                    pairs.append((response_set[i], response_set[j]))
            # Calculate similarities in batches:
            similarity_list = []
            for i in range(0, len(pairs), self.batch_size):
                batch_pairs = pairs[i : i + self.batch_size]
                similarity_list.extend(
                    self.similarity_metric(
                        [pair[0] for pair in batch_pairs], [pair[1] for pair in batch_pairs]
                    )
                )

        diversity_score = similarity2diversity_function(similarity_list)
        return diversity_score


# ---- rlvsil/diversity/metric.py, lines 222-267
class AveragedNgramDiversityMetric(DiversityMetric):
    """
    Calculates the mean values of an n-gram based diversity metric in range n in [n_min, n_max].

    config:
        shared with the original n-gram metric.
        n_min(int) > 0 - Specify the lowest n-gram value to be averaged
        n_max(int) > 0 - Specify the highest n-gram value to be averaged

    usage:
        metric = AveragedNgramDiversityMetric(config, NgramMetricClassName)
        metric(response_set)

    inheritance guidelines:
        implement __init__ only

    inheritance example:
        see AveragedDistinctNgrams
    """

    def __init__(self, config, ngram_metric_class):
        super().__init__(config)

        # validate config
        self.uint_assert("n_min")
        self.uint_assert("n_max")
        err_msg = "AveragedNgramMetric config must include n_max > n_min > 0 (int) representing n-gram size."
        assert self.config["n_max"] > self.config["n_min"] > 0, err_msg

        # add n field
        self.config["n"] = self.config["n_min"]

        # instance ngram metric
        assert issubclass(ngram_metric_class, DiversityMetric)
        self.ngram_metric = ngram_metric_class(self.config)

    def __call__(self, response_set):
        super().__call__(response_set)

        ngrams_results = []
        for n in range(self.config["n_min"], self.config["n_max"] + 1):
            self.config["n"] = n
            result = self.ngram_metric(response_set)
            # print('{}, {}'.format(self.ngram_metric.config['n'], result))
            ngrams_results.append(result)
        return np.mean(ngrams_results)


# ---- rlvsil/diversity/similarity_metrics.py, lines 60-82
class SentBertSimilarity(metric.SimilarityMetric):
    def __init__(self, config):
        super().__init__(config)

        self.model_name = "bert-large-nli-stsb-mean-tokens"  # FIXME - hard coded
        self.model = sentence_transformers.SentenceTransformer(self.model_name)
        if torch.cuda.is_available():
            self.model.to(torch.device("cuda:0"))

    # @functools.cache
    def embed(self, sentence):
        return self.model.encode(sentence)

    # @functools.cache
    def sent_bert_cosine_similarity(self, resps_1, resps_2):
        embeds_1 = self.model.encode(resps_1)
        embeds_2 = self.model.encode(resps_2)
        return cosine_similarity(embeds_1, embeds_2).diagonal()

    # @functools.cache
    def __call__(self, resp_a, resp_b):
        super().__call__(resp_b, resp_b)
        return self.sent_bert_cosine_similarity(resp_a, resp_b)


# ---- rlvsil/diversity/diversity_metrics.py, lines 16-37
class DistinctNgrams(metric.DiversityMetric):

    default_config = {"n": 3}

    def __init__(self, config):
        super().__init__(config)

        # validate config
        self.uint_assert("n")

    def normalized_unique_ngrams(self, ngram_lists):
        """
        Calc the portion of unique n-grams out of all n-grams.
        :param ngram_lists: list of lists of ngrams
        :return: value in (0,1]
        """
        ngrams = [item for sublist in ngram_lists for item in sublist]  # flatten
        return len(set(ngrams)) / len(ngrams) if len(ngrams) > 0 else 0.0

    def __call__(self, response_set):
        super().__call__(response_set)
        return self.normalized_unique_ngrams(utils.lines_to_ngrams(response_set, n=self.config["n"]))


# ---- rlvsil/diversity/diversity_metrics.py, lines 40-72
class ExpectationAdjustedDistinctNgrams(metric.DiversityMetric):
    # Taken from https://arxiv.org/abs/2202.13587

    default_config = {"n": 3, "vocab_size": 50257}
    name = "ead_averaged_distinct_ngrams"

    def __init__(self, config):
        super().__init__(config)
        self.name = "ead_averaged_distinct_ngrams"

        # validate config
        self.uint_assert("n")

    def ead_normalized_unique_ngrams(self, ngram_lists):
        """
        Calc expectation-adjusted portion of unique n-grams out of all n-grams.
        :param ngram_lists: list of lists of ngrams
        :return: value in (0,1]
        """
        ngrams = [item for sublist in ngram_lists for item in sublist]
        N = len(set(ngrams))
        C = len(ngrams)
        V = self.config["vocab_size"]

        try:
            ead = N / (V * (1 - ((V - 1) / V) ** C))
        except ZeroDivisionError:
            ead = 0.0
        return ead

    def __call__(self, response_set):
        super().__call__(response_set)
        return self.ead_normalized_unique_ngrams(utils.lines_to_ngrams(response_set, n=self.config["n"]))


# ---- rlvsil/diversity/diversity_metrics.py, lines 75-83
class AveragedDistinctNgrams(metric.AveragedNgramDiversityMetric):

    use_me = True
    default_config = {"n_min": 1, "n_max": 5}
    name = "averaged_distinct_ngrams"

    def __init__(self, config):
        super().__init__(config, DistinctNgrams)
        self.name = "averaged_distinct_ngrams"


# ---- rlvsil/diversity/diversity_metrics.py, lines 86-94
class AveragedExpectationAdjustedDistinctNgrams(metric.AveragedNgramDiversityMetric):

    use_me = True
    default_config = {"n_min": 1, "n_max": 5, "vocab_size": 50257}
    name = "ead_averaged_distinct_ngrams"

    def __init__(self, config):
        super().__init__(config, ExpectationAdjustedDistinctNgrams)
        self.name = "ead_averaged_distinct_ngrams"


# ---- rlvsil/diversity/diversity_metrics.py, lines 115-123
class SentBertFromSim(metric.Similarity2DiversityMetric):

    use_me = True
    name = "sent_bert_from_sim"
    batched = True
    batch_size = 1024

    def __init__(self, config):
        super().__init__(config, similarity_metrics.SentBertSimilarity)


# ---- rlvsil/diversity/LICENSE
# MIT License
#
# Copyright (c) 2020 Guy Tevet
#
# Permission is hereby granted, free of charge, to any person obtaining a copy
# of this software and associated documentation files (the "Software"), to deal
# in the Software without restriction, including without limitation the rights
# to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
# copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions:
#
# The above copyright notice and this permission notice shall be included in all
# copies or substantial portions of the Software.
#
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
# IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
# FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
# AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
# LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
# OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
# SOFTWARE.
#
# This license applies to the files diversity_metrics.py, metric.py, utils.py
# and similarity_metrics.py, in this folder
