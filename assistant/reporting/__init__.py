"""Operations: report figures and their wording, the chart, the schedule, its duties and notices."""
