"""The course layer: what the notebooks teach with, built on the core (`deeplab_kit.model`,
`.data`, `.training`, `.metrics`, `.evaluate`), which never imports it.

| module | what it holds |
|---|---|
| `atrous` | the geometry of atrous convolution: taps, valid weights, feature sizes, receptive fields |
| `atrous_figures` | figures of atrous convolution, ASPP, the experiments and effective receptive fields |
| `erf` | effective receptive fields: the gradient of a centre output over the input |
| `figures` | figures of data, masks, histories, confusion and per-class scores |
| `widgets` | the notebooks' sliders: the rate explorer, the prediction browser |
| `experiments` | what the experiments share: running settings x seeds, paired statistics, Holm |
| `ablation` | the ASPP rate ablation, crossed with two backbones |
| `going_deeper` | the paper's going-deeper experiment: output stride and cascaded blocks |
| `results` | stored results: make, verify, read; the experiments by name |
| `provenance` | how and where a stored result was made |
| `exercises` | the notebooks' exercises and the checks that answer in one line |
| `listing` | the code being taught on the page: a class's source, the shapes through a module |
| `plan` | what each notebook costs per profile on a 2-core CPU and a free T4 |
| `quoted_numbers` | numbers quoted from the report, the paper and torchvision, with their sources |
| `table1` | the report's Table 1 worked through: quoted beside measured, the bound, micro vs macro |
| `demo` | the demo run |
| `notebook_profiles` | notebook profiles (quick, cpu, full, rehearsal) and data preparation |
| `colab` | Colab, Google Drive and the repository's address |
"""
